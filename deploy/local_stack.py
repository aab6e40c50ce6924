"""Prometheus + Alertmanager for a bot on this machine, without Docker.

Renders copies of deploy/prometheus/prometheus.yml and deploy/alertmanager/alertmanager.yml with
loopback targets (optionally with shorter intervals), then runs the Debian binaries
(`prometheus`, `prometheus-alertmanager`) on loopback ports and waits until they are ready.
Routes, receivers, rules and inhibitions stay as committed; only addresses and timings change,
and the alert links' bases (`global.external_labels` of prometheus.yml, which the committed file
takes from the environment) are written in: by default this checkout's docs/runbooks.md as a
file:// URL and Grafana on http://localhost:3000 (RUNBOOK_BASE_URL, DASHBOARD_BASE_URL or
--runbook-base-url, --dashboard-base-url override them).

Pages and warnings go to the ops channel's Discord webhook: its URL comes from
ALERT_DISCORD_WEBHOOK_URL, or --discord-webhook-url-file, or deploy/secrets/discord_webhook_url,
and is written into the rendered config (mode 0600), because Debian's Alertmanager 0.25 cannot
read it from a file. Without one they go to a closed loopback port.

    python deploy/local_stack.py --bot 127.0.0.1:9464          # until Ctrl-C
    python deploy/local_stack.py --bot 127.0.0.1:9464 --fast   # 1 s scrapes, 5 s heal cooldown
    python deploy/local_stack.py --bot 127.0.0.1:9464 --fast --alert-for 0s  # alerts fire at once

Tests import this file by path (it is not part of the `bot` package).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import yaml

from bot.emulator.local_server import free_port

__all__ = [
    "ALERTMANAGER_CONFIG",
    "DEFAULT_DASHBOARD_BASE_URL",
    "DEFAULT_RUNBOOK_BASE_URL",
    "DISCARD_URL",
    "DISCORD_URL_ENV",
    "FAST_INTERVALS",
    "PROMETHEUS_CONFIG",
    "ManagedProcess",
    "RenderedConfigs",
    "StackError",
    "discord_webhook_url",
    "find_binary",
    "free_port",
    "render_configs",
    "start_alertmanager",
    "start_prometheus",
]

DEPLOY_DIR: Final = Path(__file__).resolve().parent
PROMETHEUS_CONFIG: Final = DEPLOY_DIR / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG: Final = DEPLOY_DIR / "alertmanager" / "alertmanager.yml"
DEFAULT_TOKEN_FILE: Final = DEPLOY_DIR / "secrets" / "webhook_token"
# The ops channel's Discord webhook URL: a secret, so an environment variable or a file (the
# same file docker-compose.yml mounts), never a command-line argument that `ps` shows.
DISCORD_URL_ENV: Final = "ALERT_DISCORD_WEBHOOK_URL"
DEFAULT_DISCORD_URL_FILE: Final = DEPLOY_DIR / "secrets" / "discord_webhook_url"
# Where the alerts' runbook_url and dashboard_url start (prometheus.yml external_labels).
DEFAULT_RUNBOOK_BASE_URL: Final = (DEPLOY_DIR.parent / "docs" / "runbooks.md").as_uri()
DEFAULT_DASHBOARD_BASE_URL: Final = "http://localhost:3000"
LINK_LABELS: Final = ("runbook_base_url", "dashboard_base_url")

BOT_JOB: Final = "discord-llm-bot"
HEAL_RECEIVER: Final = "bot-heal"
HUMAN_RECEIVERS: Final = ("pager", "chat")
# Port 9 (discard) has no listener here: pages and chat messages of a local run fail fast
# on loopback instead of leaving the machine.
DISCARD_URL: Final = "http://127.0.0.1:9/"

PROMETHEUS_BINARY: Final = "prometheus"
ALERTMANAGER_BINARY: Final = "prometheus-alertmanager"

# Timings for tests and demos: an alert reaches the webhook seconds after it starts firing and a
# still-firing alert is re-sent (the heal cooldown) every 5 s.
FAST_INTERVALS: Final[Mapping[str, str]] = {
    "scrape_interval": "1s",
    "evaluation_interval": "1s",
    "group_wait": "1s",
    "group_interval": "1s",
    "repeat_interval": "5s",
}
_PROMETHEUS_KEYS: Final = ("scrape_interval", "evaluation_interval")
_ROUTE_KEYS: Final = ("group_wait", "group_interval", "repeat_interval")
# `alert_for` (for example "0s") replaces every alert's `for:` in rendered rule copies, so a
# test does not wait minutes for a condition to count as lasting.
_RULE_KEYS: Final = ("alert_for",)
INTERVAL_KEYS: Final = frozenset(_PROMETHEUS_KEYS + _ROUTE_KEYS + _RULE_KEYS)


class StackError(RuntimeError):
    """A binary is missing, a config does not fit, or a process did not become ready."""


@dataclass(frozen=True)
class RenderedConfigs:
    """Paths of the rendered files."""

    prometheus: Path
    alertmanager: Path
    rule_files: tuple[Path, ...]


def _load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise StackError(f"{path} is not a YAML mapping")
    return data


def _dump_yaml(data: Mapping[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False), encoding="utf-8")
    return path


def committed_rule_files() -> tuple[Path, ...]:
    """The rule files prometheus.yml names, as absolute paths."""
    config = _load_yaml(PROMETHEUS_CONFIG)
    files: list[Path] = []
    for pattern in config.get("rule_files", []):
        files.extend(sorted(PROMETHEUS_CONFIG.parent.glob(str(pattern))))
    return tuple(files)


def _render_rules(out_dir: Path, alert_for: str | None) -> tuple[Path, ...]:
    originals = committed_rule_files()
    if alert_for is None:
        return originals
    rendered = []
    for original in originals:
        data = _load_yaml(original)
        for group in data.get("groups", []):
            for rule in group.get("rules", []):
                if "alert" in rule:
                    rule["for"] = alert_for
        rendered.append(_dump_yaml(data, out_dir / "rules" / original.name))
    return tuple(rendered)


def _render_prometheus(
    out_dir: Path,
    bot_target: str,
    intervals: Mapping[str, str],
    rule_files: Sequence[Path],
    alertmanager_target: str | None,
    links: Mapping[str, str],
) -> Path:
    config = _load_yaml(PROMETHEUS_CONFIG)
    global_section = config.setdefault("global", {})
    labels = global_section.setdefault("external_labels", {})
    missing = [name for name in LINK_LABELS if name not in labels]
    if missing:
        raise StackError(f"{PROMETHEUS_CONFIG} has no external label {', '.join(missing)}")
    # The committed values are ${VARIABLES} for Prometheus to expand; Debian's runs without
    # that feature flag, so the copy gets the values themselves.
    labels.update(links)
    for key in _PROMETHEUS_KEYS:
        if key in intervals:
            global_section[key] = intervals[key]
    if "scrape_interval" in intervals:
        # Prometheus refuses a scrape timeout longer than the interval.
        global_section["scrape_timeout"] = intervals["scrape_interval"]
    config["rule_files"] = [str(path) for path in rule_files]

    bot_jobs = [job for job in config.get("scrape_configs", []) if job.get("job_name") == BOT_JOB]
    if len(bot_jobs) != 1:
        raise StackError(f"{PROMETHEUS_CONFIG} must have exactly one job named {BOT_JOB!r}")
    bot_job = bot_jobs[0]
    bot_job["static_configs"] = [{"targets": [bot_target]}]
    bot_job.pop("file_sd_configs", None)  # the compose fleet's targets: not this stack's
    # The stack's other components (Grafana, Tempo, the collector) exist only in compose.
    jobs = [bot_job]
    if alertmanager_target is not None:
        jobs.append(
            {"job_name": "alertmanager", "static_configs": [{"targets": [alertmanager_target]}]}
        )
        # Only the target changes: the alert relabelling (dropping the link labels) stays.
        config.setdefault("alerting", {})["alertmanagers"] = [
            {"static_configs": [{"targets": [alertmanager_target]}]}
        ]
    else:
        config.pop("alerting", None)
    config["scrape_configs"] = jobs
    return _dump_yaml(config, out_dir / "prometheus.yml")


def _walk_routes(route: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield route
    for child in route.get("routes", []):
        yield from _walk_routes(child)


def discord_webhook_url(
    url_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> tuple[str | None, str]:
    """The ops channel's Discord webhook URL and where it came from, for the human receivers.

    From ALERT_DISCORD_WEBHOOK_URL, or `url_file`, or deploy/secrets/discord_webhook_url when
    it exists; (None, "nowhere") without any. A StackError names the source of a bad value and
    never repeats the URL, which is a secret.
    """
    env = os.environ if environ is None else environ
    from_env = env.get(DISCORD_URL_ENV, "").strip()
    if from_env and url_file is not None:
        raise StackError(f"{DISCORD_URL_ENV} and --discord-webhook-url-file are both set: keep one")
    if from_env:
        url, source = from_env, DISCORD_URL_ENV
    elif url_file is not None or DEFAULT_DISCORD_URL_FILE.is_file():
        path = url_file or DEFAULT_DISCORD_URL_FILE
        try:
            url = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise StackError(f"Discord webhook URL file {path} is unreadable: {exc}") from None
        source = str(path)
    else:
        return None, "nowhere"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in url):
        raise StackError(
            f"{source}: expected a Discord webhook URL such as "
            "https://discord.com/api/webhooks/<id>/<token> (Server Settings > Integrations)"
        )
    return url, source


def _render_alertmanager(
    out_dir: Path,
    webhook_url: str,
    token_file: Path,
    intervals: Mapping[str, str],
    human_webhook_url: str | None,
    discord_url: str | None,
) -> Path:
    config = _load_yaml(ALERTMANAGER_CONFIG)
    receivers = {receiver["name"]: receiver for receiver in config.get("receivers", [])}
    missing = [name for name in (HEAL_RECEIVER, *HUMAN_RECEIVERS) if name not in receivers]
    if missing:
        raise StackError(f"{ALERTMANAGER_CONFIG} has no receiver named {', '.join(missing)}")
    # Template globs are relative to the committed file, not to the rendered copy.
    config["templates"] = [
        str(ALERTMANAGER_CONFIG.parent / pattern) for pattern in config.get("templates", [])
    ]

    for hook in receivers[HEAL_RECEIVER].get("webhook_configs", []):
        hook["url"] = webhook_url
        authorization = hook.setdefault("http_config", {}).setdefault("authorization", {})
        authorization["type"] = "Bearer"
        authorization["credentials_file"] = str(token_file.resolve())
    for name in HUMAN_RECEIVERS:
        receiver = receivers[name]
        if human_webhook_url is not None:
            # Alertmanager's webhook JSON instead of Discord: for a relay or a test's sink.
            receiver.pop("discord_configs", None)
            receiver["webhook_configs"] = [{"url": human_webhook_url, "send_resolved": True}]
            continue
        # Copies: the receivers share one mapping through a YAML anchor in the committed file.
        receiver["discord_configs"] = [dict(d) for d in receiver.get("discord_configs", [])]
        for discord in receiver["discord_configs"]:
            # Alertmanager 0.25 has no webhook_url_file: the URL goes into the rendered file.
            discord.pop("webhook_url_file", None)
            discord["webhook_url"] = discord_url or DISCARD_URL

    for route in _walk_routes(config["route"]):
        for key in _ROUTE_KEYS:
            # Only where the committed file sets a timing: inheritance stays as designed.
            if key in intervals and key in route:
                route[key] = intervals[key]
    rendered = _dump_yaml(config, out_dir / "alertmanager.yml")
    rendered.chmod(0o600)  # it may hold the Discord webhook URL, a secret
    return rendered


def render_configs(
    out_dir: Path,
    bot_target: str,
    webhook_url: str,
    token_file: Path,
    intervals: Mapping[str, str] | None = None,
    *,
    alertmanager_target: str | None = None,
    human_webhook_url: str | None = None,
    discord_url: str | None = None,
    runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL,
    dashboard_base_url: str = DEFAULT_DASHBOARD_BASE_URL,
) -> RenderedConfigs:
    """Write prometheus.yml and alertmanager.yml for local targets into `out_dir`.

    `intervals` may set scrape_interval, evaluation_interval, group_wait, group_interval,
    repeat_interval and alert_for (see FAST_INTERVALS); without it the committed timings stay.
    Pages and warnings go to the Discord webhook `discord_url` (None: a closed loopback port),
    or with `human_webhook_url` as Alertmanager webhook JSON to that URL instead.
    `runbook_base_url` and `dashboard_base_url` start every alert's runbook_url and
    dashboard_url (prometheus.yml's external labels).
    """
    intervals = dict(intervals or {})
    unknown = set(intervals) - INTERVAL_KEYS
    if unknown:
        raise ValueError(f"unknown interval keys: {', '.join(sorted(unknown))}")
    out_dir.mkdir(parents=True, exist_ok=True)
    rule_files = _render_rules(out_dir, intervals.get("alert_for"))
    return RenderedConfigs(
        prometheus=_render_prometheus(
            out_dir,
            bot_target,
            intervals,
            rule_files,
            alertmanager_target,
            {"runbook_base_url": runbook_base_url, "dashboard_base_url": dashboard_base_url},
        ),
        alertmanager=_render_alertmanager(
            out_dir, webhook_url, token_file, intervals, human_webhook_url, discord_url
        ),
        rule_files=rule_files,
    )


def find_binary(name: str) -> str:
    """The path of an installed binary, or a StackError saying how to install it."""
    path = shutil.which(name)
    if path is None:
        raise StackError(
            f"{name} is not installed: `apt-get install prometheus prometheus-alertmanager` "
            "(or `make system-deps`)"
        )
    return path


@dataclass
class ManagedProcess:
    """A started Prometheus or Alertmanager; `stop()` (or leaving the `with`) ends it."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: Any = field(repr=False, default=None)

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the process wrote, for error messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after `timeout`)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None


def _wait_ready(managed: ManagedProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    ready_url = f"{managed.url}/-/ready"
    while time.monotonic() < deadline:
        if managed.process.poll() is not None:
            managed.stop()
            raise StackError(
                f"{managed.name} exited with {managed.process.returncode}:\n{managed.log_tail()}"
            )
        try:
            with urllib.request.urlopen(ready_url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    managed.stop()
    raise StackError(f"{managed.name} not ready after {timeout:.0f} s:\n{managed.log_tail()}")


def _start(
    name: str, args: list[str], host: str, port: int, log_path: Path, timeout: float
) -> ManagedProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("wb")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    managed = ManagedProcess(name, f"http://{host}:{port}", process, log_path, log)
    _wait_ready(managed, timeout)
    return managed


def start_prometheus(
    config: Path,
    data_dir: Path,
    port: int,
    *,
    host: str = "127.0.0.1",
    timeout: float = 30.0,
    binary: str = PROMETHEUS_BINARY,
) -> ManagedProcess:
    """Run Prometheus on host:port with `config` and wait until /-/ready answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        find_binary(binary),
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir / 'tsdb'}",
        f"--web.listen-address={host}:{port}",
        # Exemplars are a feature flag, not a config setting (see prometheus.yml).
        "--enable-feature=exemplar-storage",
        # Lets tests and SREs reload rendered configs with POST /-/reload; loopback only.
        "--web.enable-lifecycle",
    ]
    return _start("prometheus", args, host, port, data_dir / "prometheus.log", timeout)


def start_alertmanager(
    config: Path,
    data_dir: Path,
    port: int,
    *,
    host: str = "127.0.0.1",
    timeout: float = 30.0,
    binary: str = ALERTMANAGER_BINARY,
) -> ManagedProcess:
    """Run Alertmanager standalone on host:port with `config` and wait until it is ready."""
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        find_binary(binary),
        f"--config.file={config}",
        f"--storage.path={data_dir / 'data'}",
        f"--web.listen-address={host}:{port}",
        # Empty: no gossip cluster, so nothing listens beyond the one loopback port.
        "--cluster.listen-address=",
    ]
    return _start("alertmanager", args, host, port, data_dir / "alertmanager.log", timeout)


@contextmanager
def running_stack(
    workdir: Path,
    bot_target: str,
    webhook_url: str,
    token_file: Path,
    intervals: Mapping[str, str] | None = None,
    *,
    prometheus_port: int | None = None,
    alertmanager_port: int | None = None,
    human_webhook_url: str | None = None,
    discord_url: str | None = None,
    runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL,
    dashboard_base_url: str = DEFAULT_DASHBOARD_BASE_URL,
) -> Iterator[tuple[ManagedProcess, ManagedProcess]]:
    """Render the configs and run Alertmanager and Prometheus; both stop on exit."""
    am_port = alertmanager_port or free_port()
    prom_port = prometheus_port or free_port()
    rendered = render_configs(
        workdir / "config",
        bot_target,
        webhook_url,
        token_file,
        intervals,
        alertmanager_target=f"127.0.0.1:{am_port}",
        human_webhook_url=human_webhook_url,
        discord_url=discord_url,
        runbook_base_url=runbook_base_url,
        dashboard_base_url=dashboard_base_url,
    )
    # Alertmanager first, so Prometheus finds it ready; both stop on the way out.
    with (
        start_alertmanager(rendered.alertmanager, workdir / "alertmanager", am_port) as am,
        start_prometheus(rendered.prometheus, workdir / "prometheus", prom_port) as prom,
    ):
        yield prom, am


def _token_file(requested: Path | None, workdir: Path) -> Path:
    if requested is not None:
        if not requested.is_file():
            raise StackError(f"token file {requested} does not exist")
        return requested
    if DEFAULT_TOKEN_FILE.is_file():
        return DEFAULT_TOKEN_FILE
    generated = workdir / "webhook_token"
    generated.write_text(secrets.token_hex(32) + "\n", encoding="utf-8")
    generated.chmod(0o600)
    return generated


_DURATION = re.compile(r"(?:\d+(?:ms|s|m|h|d|w|y))+")


def prometheus_duration(text: str) -> str:
    """An argparse type: a Prometheus duration such as 0s, 30s or 1m30s."""
    if not _DURATION.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a Prometheus duration such as 0s or 1m")
    return text


def cli_intervals(fast: bool, alert_for: str | None) -> dict[str, str] | None:
    """The render timings the command line asks for (None: the committed ones)."""
    intervals = dict(FAST_INTERVALS) if fast else {}
    if alert_for is not None:
        intervals["alert_for"] = alert_for
    return intervals or None


def build_parser() -> argparse.ArgumentParser:
    """The command line; the link bases default from the environment as it is now."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bot", default="127.0.0.1:9464", help="the bot's ops address host:port")
    parser.add_argument("--webhook-url", help="Alertmanager's heal webhook (default: bot /alerts)")
    parser.add_argument(
        "--token-file",
        type=Path,
        help=f"bearer token shared with the bot (default: {DEFAULT_TOKEN_FILE} or a new one)",
    )
    parser.add_argument("--prometheus-port", type=int, default=9090)
    parser.add_argument("--alertmanager-port", type=int, default=9093)
    parser.add_argument(
        "--discord-webhook-url-file",
        type=Path,
        help=f"file holding the ops channel's Discord webhook URL (default: ${DISCORD_URL_ENV}, "
        f"else {DEFAULT_DISCORD_URL_FILE} when it exists; without one pages go nowhere)",
    )
    parser.add_argument(
        "--human-webhook-url",
        help="send pages and warnings as Alertmanager webhook JSON to this URL instead of "
        "Discord (a relay you run)",
    )
    parser.add_argument(
        "--runbook-base-url",
        default=os.environ.get("RUNBOOK_BASE_URL") or DEFAULT_RUNBOOK_BASE_URL,
        help="start of every alert's runbook_url (default: $RUNBOOK_BASE_URL, else this "
        "checkout's docs/runbooks.md)",
    )
    parser.add_argument(
        "--dashboard-base-url",
        default=os.environ.get("DASHBOARD_BASE_URL") or DEFAULT_DASHBOARD_BASE_URL,
        help="start of every alert's dashboard_url, Grafana's root URL (default: "
        f"$DASHBOARD_BASE_URL, else {DEFAULT_DASHBOARD_BASE_URL})",
    )
    parser.add_argument("--fast", action="store_true", help="1 s scrapes, 5 s heal cooldown")
    parser.add_argument(
        "--alert-for",
        type=prometheus_duration,
        metavar="DURATION",
        help="replace every alert's `for:` (0s: an alert fires at its first evaluation; "
        "default: the committed 2-15 minutes)",
    )
    parser.add_argument("--workdir", type=Path, help="configs, data and logs (default: temporary)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the stack until Ctrl-C."""
    args = build_parser().parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="llmbot-stack-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        token_file = _token_file(args.token_file, workdir)
        discord_url, discord_source = discord_webhook_url(args.discord_webhook_url_file)
        webhook_url = args.webhook_url or f"http://{args.bot}/alerts"
        with running_stack(
            workdir,
            args.bot,
            webhook_url,
            token_file,
            cli_intervals(args.fast, args.alert_for),
            prometheus_port=args.prometheus_port,
            alertmanager_port=args.alertmanager_port,
            human_webhook_url=args.human_webhook_url,
            discord_url=discord_url,
            runbook_base_url=args.runbook_base_url,
            dashboard_base_url=args.dashboard_base_url,
        ) as (prom, am):
            print(f"Prometheus   {prom.url}  (log {prom.log_path})")
            print(f"Alertmanager {am.url}  (log {am.log_path})")
            print(f"Scraping {args.bot}; heal webhook {webhook_url}; token file {token_file}")
            if args.human_webhook_url is not None:
                print(f"Pages and warnings: webhook JSON to {args.human_webhook_url}")
            elif discord_url is None:
                print(
                    f"Pages and warnings: nowhere (set {DISCORD_URL_ENV} or write the ops "
                    f"channel's webhook URL to {DEFAULT_DISCORD_URL_FILE})"
                )
            else:
                print(f"Pages and warnings: Discord webhook from {discord_source}")
            if args.alert_for is not None:
                print(f"Every alert fires after {args.alert_for} instead of its committed `for:`")
            print("Ctrl-C stops both.")
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            while prom.process.poll() is None and am.process.poll() is None:
                time.sleep(0.5)
            print("a process exited; see its log", file=sys.stderr)
            return 1
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
