"""The GitHub Actions workflow for an outside watcher of one peer, rendered from config.

GitHub's cron runs at most every 5 minutes and keeps no state between runs, so each run polls the
peer's health URL every ``interval_s`` for about 5 minutes and alerts Slack (an incoming webhook)
after ``alert_after`` consecutive failures. Secrets are referenced by name (``${{ secrets.X }}``)
and never inlined; values from config reach the shell only through ``env:``, never spliced into
a script. Pure: no I/O.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from daemons.heartbeat.config import PeerConfig

__all__ = ["WATCH_WINDOW_S", "WorkflowOptions", "poll_script", "render_workflow"]

WATCH_WINDOW_S = 300.0  # GitHub's shortest schedule: one run must cover the 5 minutes
RUN_URL = "${{ github.server_url }}/${{ github.repository }}/actions/runs/${{ github.run_id }}"
POLL_INTERVAL_BOUNDS_S = (10, 300)
SECRET_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")


@dataclass(frozen=True)
class WorkflowOptions:
    webhook_secret: str = "SLACK_WEBHOOK_URL"
    url_secret: str | None = None  # take the health URL from this secret instead of config
    tailscale: bool = False  # join the tailnet first (tailscale/github-action, OAuth client)
    ts_client_secret: str = "TS_OAUTH_CLIENT_ID"
    ts_secret_secret: str = "TS_OAUTH_SECRET"

    def check(self) -> None:
        names = [self.webhook_secret, self.ts_client_secret, self.ts_secret_secret]
        if self.url_secret is not None:
            names.append(self.url_secret)
        for name in names:
            if not SECRET_NAME_RE.match(name) or name.startswith("GITHUB_"):
                raise ValueError(
                    f"secret name {name!r}: use A-Z, 0-9 and _, not starting with a digit"
                    " or GITHUB_"
                )


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON string syntax is valid YAML)."""
    return json.dumps(value)


def _secret(name: str) -> str:
    return "${{ secrets." + name + " }}"


def poll_script() -> str:
    """The poll step's bash: ``POLLS`` polls ``INTERVAL`` s apart; after ``ALERT_AFTER``
    consecutive failures it records ``down=true`` (and the last HTTP code) and stops."""
    return """\
failures=0
code=000
for i in $(seq 1 "$POLLS"); do
  code=$(curl -s -o /dev/null -w '%{http_code}' --connect-timeout 10 --max-time "$TIMEOUT" \\
    "$HEALTH_URL" || true)
  if [ "$code" = "200" ]; then
    failures=0
  else
    failures=$((failures + 1))
    echo "poll $i: HTTP $code ($failures in a row)"
  fi
  if [ "$failures" -ge "$ALERT_AFTER" ]; then
    echo "down=true" >> "$GITHUB_OUTPUT"
    echo "code=$code" >> "$GITHUB_OUTPUT"
    echo "failures=$failures" >> "$GITHUB_OUTPUT"
    exit 0
  fi
  if [ "$i" -lt "$POLLS" ]; then sleep "$INTERVAL"; fi
done
echo "down=false" >> "$GITHUB_OUTPUT"
"""


def alert_script() -> str:
    return """\
text=":red_circle: [github-watch] $PEER failed $FAILURES health checks in a row (HTTP $CODE)\
 at $(date -u +%Y-%m-%dT%H:%M:%SZ). Check the host and Tailscale; if it is gone, follow\
 docs/runbooks/heartbeat.md (failover). Run: $RUN_URL"
jq -n --arg text "$text" '{text: $text}' > payload.json
curl -sS --fail --max-time 20 -X POST -H 'Content-Type: application/json' \\
  --data @payload.json "$SLACK_WEBHOOK_URL"
"""


def _block(script: str, indent: str) -> str:
    return "\n".join((indent + line) if line else "" for line in script.splitlines())


def render_workflow(peer: PeerConfig, options: WorkflowOptions | None = None) -> str:
    opts = options or WorkflowOptions()
    opts.check()
    low, high = POLL_INTERVAL_BOUNDS_S
    interval = min(high, max(low, round(peer.interval_s)))
    polls = max(peer.alert_after, math.ceil(WATCH_WINDOW_S / interval))
    timeout = max(1, math.ceil(peer.timeout_s))
    # Worst case: every poll times out, plus the sleeps, plus setup and the Slack post.
    minutes = math.ceil((polls * (timeout + 10) + (polls - 1) * interval) / 60) + 3
    url_value = _secret(opts.url_secret) if opts.url_secret else peer.url
    steps: list[str] = []
    if opts.tailscale:
        steps.append(
            f"""\
      - name: Join the tailnet
        uses: tailscale/github-action@v3
        with:
          oauth-client-id: {_q(_secret(opts.ts_client_secret))}
          oauth-secret: {_q(_secret(opts.ts_secret_secret))}
          tags: "tag:ci"
"""
        )
    steps.append(
        f"""\
      - name: Poll {peer.name} every {interval} s for ~5 minutes
        id: poll
        env:
          HEALTH_URL: {_q(url_value)}
          POLLS: {_q(str(polls))}
          INTERVAL: {_q(str(interval))}
          TIMEOUT: {_q(str(timeout))}
          ALERT_AFTER: {_q(str(peer.alert_after))}
        run: |
{_block(poll_script(), "          ")}
"""
    )
    steps.append(
        f"""\
      - name: Alert Slack
        if: steps.poll.outputs.down == 'true'
        env:
          SLACK_WEBHOOK_URL: {_q(_secret(opts.webhook_secret))}
          PEER: {_q(peer.name)}
          CODE: "${{{{ steps.poll.outputs.code }}}}"
          FAILURES: "${{{{ steps.poll.outputs.failures }}}}"
          RUN_URL: {_q(RUN_URL)}
        run: |
{_block(alert_script(), "          ")}
"""
    )
    steps.append(
        """\
      - name: Fail the run (GitHub also mails the workflow's owner)
        if: steps.poll.outputs.down == 'true'
        run: exit 1
"""
    )
    header = f"""\
# Generated by `fleet heartbeat github-workflow --peer {peer.name}` from the fleet config.
# An outside watcher for {peer.name}: every 5 minutes (GitHub's shortest schedule, which may run
# late) it polls the health URL every {interval} s and posts to Slack after {peer.alert_after}
# failures in a row. Runs keep no state, so a long outage alerts once per run. The
# healthchecks-style pings ([[heartbeat.pings]]) are the faster outside signal.
# Secrets used (set them in the repository settings): {opts.webhook_secret}\
{", " + opts.url_secret if opts.url_secret else ""}\
{", " + opts.ts_client_secret + ", " + opts.ts_secret_secret if opts.tailscale else ""}
name: {_q(f"fleet heartbeat: {peer.name}")}
"on":
  schedule:
    - cron: "*/5 * * * *"
  workflow_dispatch: {{}}
permissions:
  contents: read
concurrency:
  group: {_q(f"fleet-heartbeat-{peer.name}")}
  cancel-in-progress: false
jobs:
  watch:
    runs-on: ubuntu-latest
    timeout-minutes: {minutes}
    steps:
"""
    return header + "".join(steps)
