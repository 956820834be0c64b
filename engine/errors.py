"""Exceptions a user can cause. Each message says what went wrong and what to do about it."""


class StarError(Exception):
    """Base class: an error with a sentence meant for the person at the keyboard."""


class InvalidQueryError(StarError, ValueError):
    """The query is empty (or nothing is left after StAR's normalisation)."""


class ImageError(StarError):
    """An image could not be read, or is too large to process."""


class DatasetError(StarError):
    """A dataset file is missing or malformed; the message names the file and the problem."""


class ShapeMismatchError(StarError, ValueError):
    """A prediction and its ground truth have different sizes (we never resize silently)."""


class ModelFileError(StarError):
    """A model file is missing, unreadable, of the wrong kind, or does not match its checksum."""


class BackendUnavailableError(StarError):
    """A runtime (PyTorch, ONNX Runtime, TensorRT, CUDA) needed by the chosen backend is not installed
    or has no device here; the message says what to install or which backend to choose instead."""


class InvalidPromptError(StarError, ValueError):
    """Segmenter prompts are malformed (wrong shapes, non-finite coordinates, mismatched counts)."""


class OutputError(StarError):
    """An output folder or file cannot be written (not a folder, read-only, disk full)."""


class ContextOverflowError(StarError):
    """The prompt plus N x max_new_tokens does not fit the policy's context window."""


def run_command(prog: str, run, args, *, on_interrupt: str = "interrupted") -> int:
    """Run a CLI subcommand: our errors print one sentence (exit 2), Ctrl-C exits 130, never a traceback."""
    import sys

    try:
        return int(run(args) or 0)
    except StarError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{prog}: out of memory; try a smaller image (--max-pixels), fewer samples (-n) or fewer new tokens",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: {on_interrupt}", file=sys.stderr)
        return 130
