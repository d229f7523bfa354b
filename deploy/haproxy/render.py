"""Render livegen's HAProxy config (haproxy.cfg.template beside this file).

The template is written once; this fills in the replicas. On one machine, each
replica is named with its address::

    python deploy/haproxy/render.py --bind 127.0.0.1:8080 --max-sessions 8 \\
        --server livegen-0=127.0.0.1:8001 --server livegen-1=127.0.0.1:8002

On Kubernetes, the StatefulSet's pods are listed by their DNS names up to the
most replicas the autoscaler may make; pods that do not exist yet stay down
until their name resolves, so scaling needs no reload::

    python deploy/haproxy/render.py --kubernetes --replicas 16 --max-sessions 8

Each server's name is the replica id its session ids start with (``livegen serve
--replica-id``; on Kubernetes, the pod name). Needs livegen installed (it reads
the replica-id rule from ``stream.routing``) and nothing else.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from string import Template

from stream.routing import check_replica_id

TEMPLATE = Path(__file__).resolve().with_name("haproxy.cfg.template")

# Kubernetes: pod DNS names resolve through the cluster's DNS, re-read while running.
RESOLVERS = """\
resolvers cluster_dns
    parse-resolv-conf
    # A pod that comes or goes is seen within a second or two.
    hold valid 2s
    hold nx 1s
    hold obsolete 1s
    timeout resolve 1s
    timeout retry 1s
"""
# Pods that are not there yet (past the current replica count) start down, not fatal.
KUBERNETES_SERVER_OPTIONS = " resolvers cluster_dns resolve-prefer ipv4 init-addr none"

HEALTH_FRONTEND = """\
frontend health
    # HAProxy's own liveness, for its orchestrator: answered here, no replica involved.
    bind {bind}
    http-request return status 200 content-type text/plain string ok if {{ path /healthz }}
"""


def render(
    servers: Sequence[tuple[str, str]],
    *,
    bind: str,
    max_sessions: int,
    queue_timeout_s: float = 5.0,
    retry_after_s: int = 1,
    tunnel_timeout: str = "1h",
    check_interval: str = "1s",
    health_bind: str | None = None,
    kubernetes: bool = False,
) -> str:
    """The config for ``servers``, (replica id, host:port) pairs, in balancing order."""
    if not servers:
        raise ValueError("at least one replica is needed")
    if max_sessions < 1:
        raise ValueError(f"--max-sessions must be at least 1, got {max_sessions}")
    names = [check_replica_id(name) for name, _ in servers]
    if len(set(names)) != len(names):
        raise ValueError(f"replica ids must differ: {', '.join(names)}")
    rules = "\n".join(
        # The sid must start with the whole id and its dot: livegen-1 is not livegen-10.
        # WHIP and WHEP resources carry the session id in their path instead.
        f"    use-server {name} if {{ urlp(sid) -m beg {name}. }} || "
        f"{{ path_beg /whip/{name}. /whep/{name}. }}"
        for name in names
    )
    lines = "\n".join(f"    server {name} {address}" for name, address in servers)
    fields = {
        "global_maxconn": str(max(1024, 2 * max_sessions * len(servers))),
        "resolvers": "\n" + RESOLVERS if kubernetes else "",
        "bind": bind,
        "tunnel_timeout": tunnel_timeout,
        "queue_timeout": f"{round(queue_timeout_s * 1000)}ms",
        "health_frontend": "\n" + HEALTH_FRONTEND.format(bind=health_bind) if health_bind else "",
        "use_server_rules": rules,
        "retry_after_s": str(retry_after_s),
        "check_interval": check_interval,
        "max_sessions": str(max_sessions),
        "server_options": KUBERNETES_SERVER_OPTIONS if kubernetes else "",
        "servers": lines,
    }
    return Template(TEMPLATE.read_text()).substitute(fields)


def kubernetes_servers(
    replicas: int, statefulset: str, service: str, namespace: str, port: int, cluster_domain: str
) -> list[tuple[str, str]]:
    """The StatefulSet's pods by their stable DNS names (through the headless Service)."""
    return [
        (
            f"{statefulset}-{index}",
            f"{statefulset}-{index}.{service}.{namespace}.svc.{cluster_domain}:{port}",
        )
        for index in range(replicas)
    ]


def _server(value: str) -> tuple[str, str]:
    name, equals, address = value.partition("=")
    if not equals or ":" not in address:
        raise argparse.ArgumentTypeError(f"expected REPLICA_ID=HOST:PORT, got {value!r}")
    return name, address


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="render.py", description="Render livegen's HAProxy config from its template."
    )
    parser.add_argument("--bind", default=":8080", help="address:port clients connect to")
    parser.add_argument(
        "--max-sessions",
        type=int,
        required=True,
        help="each replica's livegen --max-sessions: HAProxy's maxconn per server",
    )
    parser.add_argument(
        "--server",
        type=_server,
        action="append",
        default=[],
        metavar="REPLICA_ID=HOST:PORT",
        help="a replica, in the order new sessions fill them (repeat)",
    )
    parser.add_argument(
        "--kubernetes",
        action="store_true",
        help="list the StatefulSet's pods by DNS name instead of --server",
    )
    parser.add_argument("--replicas", type=int, default=16, help="most pods the autoscaler makes")
    parser.add_argument("--statefulset", default="livegen")
    parser.add_argument("--service", default="livegen", help="the headless Service's name")
    parser.add_argument("--namespace", default="livegen")
    parser.add_argument("--port", type=int, default=8000, help="livegen's port in the pods")
    parser.add_argument("--cluster-domain", default="cluster.local")
    parser.add_argument(
        "--queue-timeout",
        type=float,
        default=5.0,
        help="seconds a new session waits for a free slot before 503",
    )
    parser.add_argument("--retry-after", type=int, default=1, help="Retry-After of that 503, s")
    parser.add_argument("--tunnel-timeout", default="1h", help="longest idle WebSocket session")
    parser.add_argument("--check-interval", default="1s", help="health check every (/readyz)")
    parser.add_argument("--health-bind", help="address:port answering GET /healthz (optional)")
    parser.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    if args.kubernetes == bool(args.server):
        parser.error("give either --server (one or more) or --kubernetes")
    servers = args.server or kubernetes_servers(
        args.replicas,
        args.statefulset,
        args.service,
        args.namespace,
        args.port,
        args.cluster_domain,
    )
    try:
        config = render(
            servers,
            bind=args.bind,
            max_sessions=args.max_sessions,
            queue_timeout_s=args.queue_timeout,
            retry_after_s=args.retry_after,
            tunnel_timeout=args.tunnel_timeout,
            check_interval=args.check_interval,
            health_bind=args.health_bind,
            kubernetes=args.kubernetes,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if args.output is None:
        sys.stdout.write(config)
    else:
        args.output.write_text(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
