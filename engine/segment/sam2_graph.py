"""SAM 2's image path as two plain modules, the one definition the PyTorch backend runs and the ONNX
export traces (so both backends execute the same network code).

Encoder: pixels [1, 3, S, S] -> image_embed [1, C, S/16, S/16], high_res_0 [1, C/8, S/4, S/4],
         high_res_1 [1, C/4, S/8, S/8]   (what SAM2ImagePredictor.set_image computes)
Decoder: the three maps + point_coords [K, P, 2] (model frame) + point_labels [K, P]
         -> low_res_logits [K, 3, S/4, S/4], iou_scores [K, 3]   (SAM2ImagePredictor._predict, multimask)
"""

from __future__ import annotations

FEATURE_NAMES = ("image_embed", "high_res_0", "high_res_1")


def build_graphs(model):
    """(encoder, decoder) torch modules sharing `model`'s weights."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model
            s = model.image_size
            self.sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]

        def forward(self, pixels):
            m = self.model
            backbone_out = m.forward_image(pixels)
            _, feats, _, _ = m._prepare_backbone_features(backbone_out)
            if m.directly_add_no_mem_embed:
                feats[-1] = feats[-1] + m.no_mem_embed
            maps = [f.permute(1, 2, 0).reshape(1, -1, h, w) for f, (h, w) in zip(feats, self.sizes)]
            return maps[2], maps[0], maps[1]

    class Decoder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, image_embed, high_res_0, high_res_1, point_coords, point_labels):
            m = self.model
            sparse, dense = m.sam_prompt_encoder(points=(point_coords, point_labels), boxes=None, masks=None)
            # repeat_image=True for every K (one traceable graph): for K == 1 it repeats once, the same
            # numbers as the reference's repeat_image=False path.
            low, iou, _, _ = m.sam_mask_decoder(
                image_embeddings=image_embed, image_pe=m.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                multimask_output=True, repeat_image=True, high_res_features=[high_res_0, high_res_1])
            return low, iou

    return Encoder(model), Decoder(model)
