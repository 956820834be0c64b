"""The training commands' options are generated from their settings dataclasses: every field is an
option, the defaults are the dataclass's own, and the recipe, the CLI and the trainers agree."""

import argparse
from dataclasses import MISSING, fields

import pytest

from training.cli import build_parser
from training.nano.recipe import NanoRecipe
from training.nano.segmenter import SamTrainConfig
from training.nano.vision_pretrain import VisionPretrainConfig
from training.nano.warmup_config import DEFAULT_CURRICULUM, PHASE_ENDS, WarmupConfig, curriculum_until


@pytest.mark.parametrize("command, cls, required", [
    ("nano-warmup", WarmupConfig, ["--model", "m", "--out", "o"]),
    ("nano-sam", SamTrainConfig, ["--out", "o"]),
    ("nano-vision", VisionPretrainConfig, ["--warmup", "w"]),
])
def test_defaults_come_from_the_dataclass_and_every_field_is_an_option(command, cls, required):
    from training.config_cli import dataclass_from_args

    args = build_parser().parse_args([command, *required])
    built = dataclass_from_args(cls, args)
    positional = {f.name: getattr(built, f.name) for f in fields(cls) if f.default is MISSING}
    assert built == cls(**positional)  # nothing the parser adds differs from the dataclass's defaults
    sub = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == command)[1]
    dests = {a.dest for a in sub._actions if not isinstance(a, argparse._HelpAction)} - {"quiet"}
    assert dests == {f.name for f in fields(cls)}
    help_text = sub.format_help()
    for f in fields(cls):
        assert f.metadata.get("help", "")[:20].split("\n")[0] in " ".join(help_text.split())


def test_command_line_forms_become_the_fields_values():
    from training.config_cli import dataclass_from_args

    args = build_parser().parse_args(["nano-warmup", "--model", "m", "--out", "o", "--attn-heads", "2.0", "3.0",
                                      "--phase-ends", "10", "20", "--decay-from", "5"])
    config = dataclass_from_args(WarmupConfig, args)
    assert config.attn_heads == ((2, 0), (3, 0)) and config.decay_from == 5
    assert config.curriculum == curriculum_until(10, 20)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["nano-warmup", "--model", "m", "--out", "o", "--name-heads", "two"])


def test_the_recipe_and_the_commands_agree_on_curriculum_and_device():
    assert NanoRecipe("x").warmup_phase_ends == PHASE_ENDS
    assert curriculum_until(*PHASE_ENDS) == DEFAULT_CURRICULUM
    devices = {NanoRecipe("x").device, WarmupConfig("m", "o").device, SamTrainConfig("o").device,
               VisionPretrainConfig("w").device}
    assert devices == {"auto"}
