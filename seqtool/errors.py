"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class SeqtoolError(Exception):
    """A problem with the user's input (recipe, files, checkpoint), not a bug in seqtool."""


def located(path: object, message: str, line: int | None = None) -> SeqtoolError:
    """An error that names the file (and line) it is about, `path:line: message`."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    return SeqtoolError(f"{where}: {message}")


def first_line(err: BaseException, limit: int = 200) -> str:
    """An exception's first message line, cut to `limit` characters (its class name when it says nothing):
    a library's multi-line error inside one seqtool line."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__
