"""The environment a job's process gets: an allowlist of the service's own, plus the job's identity."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def child_environment(
    parent: Mapping[str, str], inherited_names: Iterable[str], job_variables: Mapping[str, str]
) -> dict[str, str]:
    """Only the named variables are inherited; secrets such as DATABASE_URL never are, as nobody names them."""
    environment = {name: parent[name] for name in inherited_names if name in parent}
    environment.update(job_variables)
    return environment
