"""The research scripts' logs: one JSON line per finished measurement, appended to research/logs/<name>.jsonl."""
import json
from pathlib import Path

LOGS = Path(__file__).resolve().parent / "logs"


def append(log: Path, record: dict, echo: bool = True) -> None:
    """Append `record` to `log` as one JSON line (the folder made when missing); print it too when `echo`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(json.dumps(record) + "\n")
    if echo:
        print(json.dumps(record), flush=True)
