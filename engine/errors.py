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


def unavailable(module: str, exc: ImportError, hint: str) -> BackendUnavailableError:
    """The error for a runtime that did not import: missing (the hint says what to install), or installed
    and broken (its own error named: an interrupted or damaged import is not a missing package)."""
    import importlib.util

    try:
        installed = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        installed = False
    if not installed:
        return BackendUnavailableError(hint)
    return BackendUnavailableError(f"{module} is installed but could not be imported ({type(exc).__name__}: "
                                   f"{str(exc)[:200]}); try again, or reinstall it: {hint}")


class InvalidPromptError(StarError, ValueError):
    """Segmenter prompts are malformed (wrong shapes, non-finite coordinates, mismatched counts)."""


class OutputError(StarError):
    """An output folder or file cannot be written (not a folder, read-only, disk full)."""


class ContextOverflowError(StarError):
    """The prompt plus N x max_new_tokens does not fit the policy's context window."""


class MemoryBudgetError(StarError):
    """The work asked for (masks of N samples at the image's full size) needs more memory than this process
    can have; the message names the sizes and what to lower. Raised before the allocation."""


INTERNAL_ERROR = "internal error"


def crash_log_path():
    """Where a command writes the traceback of an unexpected error (the user sees one line naming it)."""
    from .fileio import cache_dir

    return cache_dir() / "crash.log"


def _log_crash(prog: str) -> str:
    import time
    import traceback

    path = crash_log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"--- {prog} {time.strftime('%Y-%m-%d %H:%M:%S')}\n{traceback.format_exc()}\n")
        return f"the details are in {path}"
    except OSError:
        return "no crash log could be written"


def _internal_error(prog: str, exc: BaseException) -> int:
    import sys

    print(f"{prog}: {INTERNAL_ERROR} ({type(exc).__name__}: {str(exc)[:200]}); {_log_crash(prog)}", file=sys.stderr)
    return 3


def run_command(prog: str, run, args, *, on_interrupt: str = "interrupted") -> int:
    """Run a CLI subcommand: our errors print one sentence (exit 2), Ctrl-C exits 130, never a traceback.
    A file-system error on a named path (not a folder, read-only, no space, no permission) is the user's to
    fix: one line names the path and the reason (exit 2). Any other error the code did not foresee is a bug:
    one line says so (exit 3), the traceback goes to a log."""
    import sys

    try:
        return int(run(args) or 0)
    except StarError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename is None:  # not about a path the user gave: unforeseen, handled as a bug below
            return _internal_error(prog, exc)
        path = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        print(f"{prog}: {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{prog}: out of memory; try a smaller image (--max-pixels), fewer samples (-n) or fewer new tokens",
              file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the last guard: a user never sees a traceback
        return _internal_error(prog, exc)
    except KeyboardInterrupt:
        print(f"{prog}: {on_interrupt}", file=sys.stderr)
        return 130
