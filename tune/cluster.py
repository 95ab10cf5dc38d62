"""Refuse to run on a Ray cluster that runs anybody's code: one without token authentication.

Ray's `ray start --head` turns token authentication on only when RAY_AUTH_MODE=token is set or a token
already exists on that machine (Ray 2.60); otherwise anyone who can reach the head's port can submit
jobs to it (CVE-2023-48022, "ShadowRay"). After the driver has joined a cluster, one call to the
cluster's GCS without a token tells: a protected cluster answers UNAUTHENTICATED.
"""
from __future__ import annotations

import os

from .options import RunError

__all__ = ["require_token_auth", "answers_without_token"]

README_SECTION = 'README, "Several machines"'


def require_token_auth(address: str | None) -> None:
    """RunError (one line) when the cluster this process joined answers callers without its token.
    Skipped where the user opted out (RAY_AUTH_MODE=disabled) and for ray:// (Ray Client) addresses,
    whose GCS is not reachable from here."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled" or (address or "").startswith("ray://"):
        return
    import ray

    gcs = ray.get_runtime_context().gcs_address
    if not answers_without_token(gcs):
        return
    ray.shutdown()  # leave it before saying so: a notebook may go on to start a cluster of its own
    where = address or "the cluster already running on this machine"
    raise RunError(f"the Ray cluster at {where} ({gcs}) runs code for anyone who can reach it: it has no token "
                   f"authentication; restart it with RAY_AUTH_MODE=token ({README_SECTION}), or set "
                   "RAY_AUTH_MODE=disabled to run on it anyway")


def answers_without_token(gcs: str) -> bool:
    """Whether the GCS at HOST:PORT answers a call that carries no token. RunError if it cannot be asked."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    # A bare channel: Ray adds its token only to the channels it makes itself.
    with grpc.insecure_channel(gcs) as channel:
        try:
            gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(), timeout=10)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                return False
            raise RunError(f"cannot check the Ray cluster at {gcs} for token authentication "
                           f"({exc.code().name}); set RAY_AUTH_MODE=disabled to run without the check") from None
    return True
