"""The destination's capabilities worked out once for each way dlt asks during a `load`, not a dozen times.

dlt asks the destination factory for its capabilities (`Destination.capabilities()`) at every step of a
run: the pipeline's context, extract (twice), normalize, the state sync, the load, each schema lookup; and
the loader asks too (the file format, the views' SQL dialect). Each time the factory resolves its
configuration from every config provider (the environment, `config.toml`, `secrets.toml`) to adjust them.
In the README's test command that resolution was about a seventh of all the CPU (py-spy over the default
run); a no-op run asked 9 times.

Nothing a load does changes that configuration, so `steady_capabilities(pipeline)` answers, for the
block, each repeated question with a copy of the first answer to it (dlt changes the answer it gets: the
file formats). A question is the same when it names a naming convention of the same class and settings
(dlt makes a new one each time it reloads a schema); the credentials `one_connection` lends for a slice
change nothing dlt adjusts the capabilities for. A question that brings its own configuration (dlt's
`client()`) is always worked out. At the end of the block the factory answers as before, so a change to
the configuration between two loads is seen by the next one."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Tuple


@contextmanager
def steady_capabilities(pipeline: Any) -> Iterator[None]:
    """The pipeline's destination answers repeated capability questions from its first answers (see the
    module) for the block."""
    destination = pipeline.destination
    if destination is None or "capabilities" in vars(destination):  # none yet, or a caller's own already
        yield
        return
    work_out = destination.capabilities
    answers: List[Tuple[Any, Any]] = []  # (naming, capabilities)

    def capabilities(config: Optional[Any] = None, naming: Optional[Any] = None) -> Any:
        if config is not None:
            return work_out(config, naming)
        for seen_naming, caps in answers:
            if _same_naming(seen_naming, naming):
                return copy.copy(caps)
        caps = work_out(None, naming)
        answers.append((naming, caps))
        return copy.copy(caps)

    destination.capabilities = capabilities
    try:
        yield
    finally:
        del destination.capabilities


def _same_naming(one: Any, other: Any) -> bool:
    """Whether two naming conventions name alike: the same class with the same settings (`max_length`)."""
    if one is None or other is None:
        return one is other
    return type(one) is type(other) and vars(one) == vars(other)
