"""``llmpulse alerts``: follow the alerts topic (incidents, their member alerts folded under them), list a
worker's incidents, acknowledge an alert or an incident."""

from __future__ import annotations

import inspect
import json
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from llmpulse.config import Topics
from llmpulse.schemas.alerts_topic import INCIDENT_KIND

if TYPE_CHECKING:
    import urllib.request

TAIL_GROUP = "llmpulse-alerts-tail"  # required by the client; partitions are assigned, nothing is committed
alerts_app = typer.Typer(help="Follow and acknowledge incidents and alerts.", no_args_is_help=True)
_COLORS = {"CRITICAL": "bold red", "ERROR": "red", "WARNING": "yellow", "INFO": "cyan"}
_RANK = {"INFO": 0, "WARNING": 1, "ERROR": 2, "CRITICAL": 3}
MEMBERS_SHOWN = 3  # member alerts listed under an incident line; the rest are counted
# A member alert waits this long for its incident: the worker announces one after its group wait (up to 60 s
# of event time for WARNING, LLMPULSE_INCIDENTS__*) and its next 5 s tick.
HOLD_S = 90.0
_WORKER_URL = "http://127.0.0.1:6066"
WORKER_ADVICE = "start one with `llmpulse worker`, or pass --url with a running worker's address"


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")


def help_text(doc: str) -> str:
    """Paragraphs as single lines, so the help wraps to the terminal instead of at the source's line ends."""
    return "\n\n".join(p.replace("\n", " ") for p in inspect.cleandoc(doc).split("\n\n"))


class TailView:
    """What ``alerts tail`` prints for each record of the alerts topic; pure: no Kafka, no terminal.

    ``add`` takes records in topic order and returns the entries to print now (rich markup, an entry may span
    lines; JSON text with ``as_json``). Default view: one entry per incident event, its first members folded
    under it; a member alert an incident has listed is not printed on its own. A member alert no incident has
    listed yet is held for ``hold_s`` (the worker announces an incident after its group wait), then printed
    dimmed on its own by ``flush``; ``flush()`` without a time prints every alert still held. A member that
    resolved within the group wait never gets an incident, so it ends up printed that way.
    ``members=True``: an incident event is one line and every alert record is printed as it arrives.
    ``as_json=True``: every record, as one JSON object with ``kind`` ("alert" or "incident").
    ``severity`` filters both kinds. ``shown`` counts the entries printed.
    """

    def __init__(self, severity: str = "INFO", members: bool = False, as_json: bool = False,
                 hold_s: float = HOLD_S, capacity: int = 100_000) -> None:
        self.floor = _RANK[severity.upper()]
        self.members = members
        self.as_json = as_json
        self.hold_s = hold_s
        self.capacity = capacity
        self.shown = 0
        self._incident_of: OrderedDict[str, str] = OrderedDict()  # member alert_id -> incident_id
        self._held: deque[tuple[float, dict[str, Any]]] = deque()  # (arrival, alert) waiting for an incident

    def add(self, kind: str, record: Mapping[str, Any], now: float) -> list[str]:
        if kind == INCIDENT_KIND:
            self._learn(record)
        if _RANK.get(str(record["severity"]), 0) < self.floor:
            return []
        if self.as_json:
            return self._show([json.dumps({"kind": kind, **record})])
        if kind == INCIDENT_KIND:
            return self._show([incident_entry(record, members_shown=0 if self.members else MEMBERS_SHOWN)])
        if self.members:
            return self._show([alert_entry(record, self._incident_of.get(record["alert_id"]))])
        if record["alert_id"] not in self._incident_of:
            self._held.append((now, dict(record)))
        return []

    def flush(self, now: float | None = None) -> list[str]:
        """Held alerts whose incident did not arrive within ``hold_s`` (every one still held when ``now`` is
        None), each on its own, dimmed."""
        out = []
        while self._held and (now is None or now - self._held[0][0] >= self.hold_s):
            record = self._held.popleft()[1]
            if record["alert_id"] not in self._incident_of:
                out.append(f"[dim]{alert_entry(record, note='in no incident yet')}[/dim]")
        return self._show(out)

    def _learn(self, incident: Mapping[str, Any]) -> None:
        listed = {member["alert_id"] for member in incident["members"]}
        for alert_id in listed:
            self._incident_of.pop(alert_id, None)
            self._incident_of[alert_id] = incident["incident_id"]
        while len(self._incident_of) > self.capacity:
            self._incident_of.popitem(last=False)
        if listed and self._held:
            self._held = deque(held for held in self._held if held[1]["alert_id"] not in listed)

    def _show(self, entries: list[str]) -> list[str]:
        self.shown += len(entries)
        return entries


def _when(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000))


def _severity(severity: str, width: int = 8) -> str:
    color = _COLORS.get(severity, "white")
    return f"[{color}]{severity:<{width}}[/{color}]"


def alert_entry(alert: Mapping[str, Any], incident_id: str | None = None, note: str = "") -> str:
    """One member alert event, as ``alerts tail --members`` prints it (``note`` ends its first line)."""
    line = (
        f"{_when(alert['updated_at_ms'])} {_severity(alert['severity'])} {alert['priority']} {alert['status']:<12} "
        f"{escape(alert['rule']):<18} {escape(alert['summary'])}  [dim]id={escape(alert['alert_id'])}"
        + (f" incident={escape(incident_id)}" if incident_id else "") + "[/dim]"
        + (f"  ({escape(note)})" if note else "")
    )
    if alert["status"] == "firing" and alert.get("mitigation"):
        line += f"\n          [dim]mitigation: {escape(alert['mitigation'])}[/dim]"
    return line


def incident_entry(incident: Mapping[str, Any], members_shown: int = MEMBERS_SHOWN) -> str:
    """One incident event: its line, its mitigation when it pages, then its first ``members_shown`` members."""
    count = incident["member_count"]
    status = f"{incident['status']:<12}"
    lines = [
        f"{_when(incident['updated_at_ms'])} {_severity(incident['severity'])} {incident['priority']} "
        + (f"[bold]{status}[/bold]" if incident["paging"] else status)
        + f" {incident['scope']}={escape(incident['scope_key'])}  {escape(incident['summary'])}"
        f"  [dim]({count} alert{'s' if count != 1 else ''}) id={escape(incident['incident_id'])}[/dim]"
    ]
    if incident["paging"] and incident["status"] != "resolved" and incident.get("mitigation"):
        lines.append(f"          [dim]mitigation: {escape(incident['mitigation'])}[/dim]")
    if members_shown:
        listed = incident["members"][:members_shown]
        for member in listed:
            lines.append(
                f"          - {_severity(member['severity'])} {member['status']:<12} {escape(member['rule']):<18} "
                f"{escape(member['summary'])}  [dim]id={escape(member['alert_id'])}[/dim]"
            )
        if count > len(listed):
            lines.append(f"          [dim]... and {count - len(listed)} more[/dim]")
    return "\n".join(lines)


def tail(
    severity: Annotated[
        str | None, typer.Option(help="Only this severity or worse: INFO, WARNING, ERROR, CRITICAL.")
    ] = None,
    members: Annotated[
        bool, typer.Option("--members", help="Print every member alert on its own, not folded under incidents.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help='One JSON object per record, alerts and incidents, with "kind".')
    ] = False,
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest record kept, not the newest.")] = False,
    max_entries: Annotated[
        int, typer.Option("--max", help="Stop after this many entries: incident events, and alerts in no "
                                        "incident (--members, --json: records) (0: never).")
    ] = 0,
    timeout: Annotated[float, typer.Option(help="Stop after this many seconds (0: never).")] = 0.0,
    hold: Annotated[
        float, typer.Option(help="Seconds a member alert waits for its incident before it is printed on its own.")
    ] = HOLD_S,
) -> None:
    """Print incidents from the alerts topic as they arrive, member alerts folded under them (Ctrl-C stops).

    Each incident event is one line (time, severity, priority, status, scope=key, summary, member count, id)
    with its first members under it; paging events are in bold. A member alert that no incident lists within
    --hold seconds is printed dimmed on its own. --members prints every member alert event instead.
    """
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition
    from rich.console import Console

    from llmpulse.commands.connect import kafka_or_exit
    from llmpulse.connection import client_config
    from llmpulse.schemas.alerts_topic import AlertsTopicCodec
    from llmpulse.schemas.single_object import DecodeError

    if (severity or "INFO").upper() not in _RANK:
        raise typer.BadParameter(f"unknown severity {severity!r}", param_hint="--severity")
    bootstrap, security = kafka_or_exit()
    view = TailView(severity or "INFO", members=members, as_json=as_json, hold_s=hold)
    topic = Topics.from_env().alerts
    codec = AlertsTopicCodec()
    console = Console(soft_wrap=True)
    errors = Console(soft_wrap=True, stderr=True) if as_json else console
    consumer = Consumer({**client_config(bootstrap, security, "llmpulse.cli.librdkafka"),
                         "group.id": TAIL_GROUP,
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    deadline = time.monotonic() + timeout if timeout else None

    def show(entries: list[str]) -> None:
        for entry in entries:
            print(entry, flush=True) if as_json else console.print(entry)

    def done() -> bool:
        return bool(max_entries and view.shown >= max_entries)

    try:
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        partitions = _partitions(consumer, topic, deadline)
        consumer.assign([TopicPartition(topic, p, start) for p in partitions])
        if not as_json:
            console.print(f"[dim]following {topic} on {bootstrap} ({len(partitions)} partitions)[/dim]")
        while (deadline is None or time.monotonic() < deadline) and not done():
            for message in consumer.consume(num_messages=100, timeout=0.5):
                if message.error():
                    if message.error().code() != KafkaError._PARTITION_EOF:
                        errors.print(f"[red]{message.error()}[/red]")
                    continue
                try:
                    kind, record = codec.decode(message.value())
                except DecodeError as exc:
                    errors.print(f"[red]unreadable record on {topic}: {escape(str(exc))}[/red]")
                    continue
                show(view.add(kind, record, time.monotonic()))
                if done():
                    break
            show(view.flush(time.monotonic()))
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
        show(view.flush())  # alerts still waiting for an incident are printed, never dropped


alerts_app.command("tail", help=help_text(tail.__doc__ or ""))(tail)


def _partitions(consumer: Any, topic: str, deadline: float | None) -> list[int]:
    """Partitions of the alerts topic, waiting for it to exist (the worker creates it)."""
    while True:
        metadata = consumer.list_topics(topic, timeout=5).topics.get(topic)
        if metadata is not None and metadata.error is None and metadata.partitions:
            return sorted(metadata.partitions)
        if deadline is not None and time.monotonic() >= deadline:
            return []
        time.sleep(0.5)


@alerts_app.command()
def incidents(
    url: Annotated[str, typer.Option(help="Any worker's HTTP address.")] = _WORKER_URL,
    status: Annotated[
        str, typer.Option(help="open (not resolved), all, or one of opened/escalated/updated/acknowledged/resolved.")
    ] = "open",
    as_json: Annotated[bool, typer.Option("--json", help="The worker's answer as JSON.")] = False,
) -> None:
    """List the incidents a worker knows (GET /api/incidents; every worker gives the same answer)."""
    import urllib.parse
    import urllib.request

    query = "" if status == "all" else "?" + urllib.parse.urlencode({"status": status})
    text = _call_worker(urllib.request.Request(f"{url.rstrip('/')}/api/incidents{query}"), url)
    if as_json:
        typer.echo(text)
        return
    answer = json.loads(text)
    from rich.console import Console

    console = Console(soft_wrap=True)
    for incident in answer["incidents"]:
        console.print(incident_entry(incident))
    console.print(f"[dim]{answer['count']} incident{'s' if answer['count'] != 1 else ''} ({status})[/dim]")


@alerts_app.command()
def ack(
    alert_id: Annotated[
        str, typer.Argument(help="The id shown by `alerts tail`: an incident's or a member alert's.")
    ],
    url: Annotated[str, typer.Option(help="Any worker's HTTP address.")] = _WORKER_URL,
    token: Annotated[
        str | None, typer.Option(envvar="LLMPULSE_API_TOKEN", help="Bearer token (default LLMPULSE_API_TOKEN).")
    ] = None,
    actor: Annotated[str, typer.Option(help="Who acknowledges (recorded on the alert or incident).")] = "cli",
) -> None:
    """Acknowledge an incident (and its members) or one alert through a worker's API; every worker sees it."""
    import urllib.request

    if not token:
        raise typer.BadParameter("a token is required: --token or LLMPULSE_API_TOKEN", param_hint="--token")
    request = urllib.request.Request(
        f"{url.rstrip('/')}/api/alerts/{alert_id}/acknowledge",
        data=json.dumps({"actor": actor}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    typer.echo(_call_worker(request, url))


def _call_worker(request: urllib.request.Request, url: str) -> str:
    """The worker's answer (JSON text); a refusal or an unreachable worker ends the command with exit code 1."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        typer.echo(f"refused ({exc.code}): {exc.read().decode()}", err=True)
        raise typer.Exit(1) from None
    except urllib.error.URLError as exc:
        typer.echo(f"llmpulse: cannot reach a worker at {url}: {exc.reason}; {WORKER_ADVICE}", err=True)
        raise typer.Exit(1) from None
