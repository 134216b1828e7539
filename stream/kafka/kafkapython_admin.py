"""Topic management with kafka-python's KafkaAdminClient.

Created topics are waited for until every partition has a leader (KRaft brokers acknowledge
CreateTopics before the metadata propagates; a producer writing at once would otherwise wait
on metadata): the caller can use a topic as soon as `create_topics` returns.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from kafka import KafkaAdminClient
from kafka import errors as kerr
from kafka.admin import ConfigResource

from stream.kafka.kafkapython_errors import WATCH, client_error

_EXISTS = kerr.TopicAlreadyExistsError.errno


class KafkaPythonAdmin:
    """Topic management (see stream.kafka.clients.Admin)."""

    def __init__(self, options: dict[str, Any], timeout_s: float) -> None:
        self._timeout_ms = max(1, int(timeout_s * 1000))
        admin_options = {k: v for k, v in options.items() if k != "metrics_enabled"}
        started = time.monotonic()
        try:
            self._client = KafkaAdminClient(**admin_options)
        except kerr.KafkaError as exc:
            error = client_error(exc, what="cannot create a kafka-python admin client")
            raise WATCH.explain(error, since=started) from None

    def _describe(self, names: list[str] | None) -> list[dict[str, Any]]:
        try:
            return list(self._client.describe_topics(names))
        except kerr.KafkaError as exc:
            raise client_error(exc, what="describe topics") from None

    def topics(self) -> dict[str, int]:
        return {t["name"]: len(t["partitions"]) for t in self._describe(None)
                if t["error_code"] == 0}

    def replication_factors(self, names: list[str]) -> dict[str, int]:
        """Replicas per existing topic among `names` (what `topics apply` checks)."""
        if not names:
            return {}
        return {t["name"]: max((len(p["replica_nodes"]) for p in t["partitions"]), default=0)
                for t in self._describe(names) if t["error_code"] == 0}

    def create_topics(self, topics: Mapping[str, tuple[int, int, Mapping[str, str]]]
                      ) -> dict[str, str | None]:
        if not topics:
            return {}
        request = {name: {"num_partitions": parts, "replication_factor": rf,
                          "configs": dict(config)}
                   for name, (parts, rf, config) in topics.items()}
        try:
            response = self._client.create_topics(request, timeout_ms=self._timeout_ms,
                                                  raise_errors=False)
        except kerr.KafkaError as exc:
            raise client_error(exc, what="create topics") from None
        out: dict[str, str | None] = {}
        for topic in response["topics"]:
            code = topic["error_code"]
            if code == 0:
                out[topic["name"]] = None
            elif code == _EXISTS:
                out[topic["name"]] = "already exists"
            else:
                error = kerr.for_code(code)
                out[topic["name"]] = topic.get("error_message") or error.__name__
        created = [name for name, error in out.items() if error is None]
        try:
            self._client.wait_for_topics(created, timeout_ms=self._timeout_ms)
        except kerr.KafkaError as exc:
            raise client_error(exc, what="waiting for created topics") from None
        return out

    def delete_topics(self, names: list[str]) -> None:
        """Best effort: a topic that does not exist (any more) is not an error."""
        if not names:
            return
        try:
            self._client.delete_topics(names, timeout_ms=self._timeout_ms, raise_errors=False)
        except kerr.KafkaError as exc:
            raise client_error(exc, what="delete topics") from None

    def topic_configs(self, names: list[str]) -> dict[str, dict[str, str]]:
        """Every config of each topic (defaults included, as librdkafka reports them); a
        topic that does not exist is left out (kafka-python describes it as empty)."""
        if not names:
            return {}
        try:
            found = self._client.describe_configs(
                [ConfigResource("TOPIC", name) for name in names], config_filter="all")
        except kerr.KafkaError as exc:
            raise client_error(exc, what="describe configs") from None
        topics = found.get("topic", {})
        return {name: {key: entry["value"] for key, entry in topics.get(name, {}).items()
                       if entry.get("value") is not None}
                for name in names if topics.get(name)}

    def close(self) -> None:
        self._client.close()
