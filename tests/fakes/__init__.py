"""Real HTTP servers on 127.0.0.1 standing in for remote services (Slack, and later Ollama, the
LLM endpoint, Paperless, a healthchecks ping receiver), with fault injection."""

from tests.fakes.http import FakeHTTPServer, Fault, RecordedRequest
from tests.fakes.slack import FakeSlack, SlackMessage

__all__ = ["FakeHTTPServer", "FakeSlack", "Fault", "RecordedRequest", "SlackMessage"]
