"""The kafka-python group member, and what both kafka-python consumers share.

`poll` returns what kafka-python has fetched (up to `max_records`), waiting up to the timeout
only when nothing is, and reports the partitions whose position reached the end a
read_committed consumer can see. kafka-python 3.0 has no end-of-partition event and does not
keep the last stable offset (LSO) that every fetch response carries (its Fetcher stores only
the high watermark, TopicPartitionState.highwater), so `keep_stable_offsets` keeps it as the
Fetcher parses each response: a partition is at its end when its position reached the cached
high watermark (a topic without open transactions) or the LSO of its latest fetch response
(an open transaction holds the LSO back), which is how librdkafka decides its end of
partition too. The fetch session sends a partition again whenever its LSO moves, so the end
is as fresh as the fetches, and no poll waits on a question to the broker. Before 2026-12-03
the LSO was asked with ListOffsets for a partition stuck below its high watermark for
`_STUCK_S`, at most once per `_ASK_S`: a poll blocked on that round trip, and an end from it
stayed up to a second stale after the transaction committed. That question remains only for
a partition whose fetch responses carry no LSO (a broker that does not send one).

Pause keeps what is prefetched: kafka-python 3 parks a paused partition's fetched data and
hands it out on resume (KAFKA-7548, dpkp/kafka-python#2981), and positions only move past
records `poll` returned, so after pause/resume the next record is the one after the last one
returned, as the protocol requires.

An assignment starts from the committed offsets, as librdkafka's does: kafka-python 3.0.12
keeps a partition's position (and pause) when an eager rebalance revokes it and hands it
straight back (`SubscriptionState.assign_from_subscribed`), past the records it had fetched.
The scorer dropped those at revocation (they are not done: nothing of them is committed), so
they were never processed by anyone until a restart; two instances whose group rebalanced
left hundreds of transactions without a verdict. `_FromCommitted` seeks every assigned
partition to its committed offset before the scorer hears of the assignment.

kafka-python internals used (3.0.x): the subscription state (`_subscription.assignment`:
positions, high watermarks and pauses without the broker round trip `position()` may make),
the cluster metadata refresh with a timeout (`_cluster`, `_manager`, `_net`: `topics()` and
`partitions_for_topic()` wait without one), and the coordinator (`_coordinator`: a rebalance
under way is finished before polling, see `_poll`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka import errors as kerr

from stream.kafka.classify import ClientError, without_generation
from stream.kafka.clients import RebalanceListener
from stream.kafka.commits import AsyncCommits
from stream.kafka.kafkapython_errors import WATCH, client_error
from stream.kafka.kafkapython_rebalance import CallbackError, CallerThread
from stream.kafka.records import BEGINNING, Polled, Record, Source

log = logging.getLogger("stream.kafka")
_END = -1  # Kafka's OFFSET_END
_STUCK_S = 0.5  # a partition below its high watermark this long may be held by a transaction
_ASK_S = 1.0  # ... and its last stable offset is asked at most this often
_SLACK_S = 0.5  # a poll waits this much past its timeout for kafka-python's poll to return


def topic_partition(source: Source) -> TopicPartition:
    return TopicPartition(source[0], source[1])


def _sources(tps: Any) -> list[Source]:
    return sorted((tp.topic, tp.partition) for tp in tps)


def to_records(batch: Mapping[Any, list[Any]]) -> list[Record]:
    """ConsumerRecords as Records, each partition's in offset order."""
    out: list[Record] = []
    append = out.append
    for tp, records in batch.items():
        topic, partition = tp.topic, tp.partition
        for r in records:
            append(Record(topic, partition, r.offset, r.key, r.value, r.timestamp,
                          tuple(r.headers) if r.headers else ()))
    return out


State = tuple[TopicPartition, int | None, int | None, bool]


def keep_stable_offsets(fetcher: Any) -> dict[TopicPartition, int]:
    """Keep the last stable offset of every fetch response `fetcher` (a kafka-python
    Fetcher) parses, the highest seen per partition, in the dict returned (module
    docstring). Kept before the Fetcher looks at the records, whatever it then does with
    them (a response for an old position is still the broker's word on its LSO, which
    never moves back); a response with an error, or without an LSO (-1), leaves it as it was.

    >>> from types import SimpleNamespace as NS
    >>> fetcher = NS(_parse_fetched_data=lambda completed: "parsed")
    >>> stable = keep_stable_offsets(fetcher)
    >>> response = NS(topic_partition="t-0", partition_data=NS(error_code=0, last_stable_offset=7))
    >>> fetcher._parse_fetched_data(response), stable
    ('parsed', {'t-0': 7})
    """
    stable: dict[TopicPartition, int] = {}
    parse = fetcher._parse_fetched_data

    def parse_keeping_lso(completed_fetch: Any) -> Any:
        data = completed_fetch.partition_data
        lso = getattr(data, "last_stable_offset", -1)
        if data.error_code == 0 and lso is not None and lso >= 0:
            tp = completed_fetch.topic_partition
            if lso > stable.get(tp, -1):
                stable[tp] = lso
        return parse(completed_fetch)

    fetcher._parse_fetched_data = parse_keeping_lso
    return stable


def partition_states(consumer: KafkaConsumer) -> list[State]:
    """(partition, position, high watermark, paused) per assigned partition, from the
    consumer's own state: no broker round trip."""
    out = []
    for tp, state in list(consumer._subscription.assignment.items()):
        position = state.position
        out.append((tp, None if position is None else position.offset, state.highwater,
                    state.paused))
    return out


class _FromCommitted:
    """The scorer's listener, with every assignment starting from the committed offsets (the
    module docstring): the group protocol's contract, which kafka-python 3.0.12 keeps only
    for partitions that are new to this member."""

    def __init__(self, consumer: KafkaConsumer, listener: RebalanceListener,
                 timeout_s: float, stable: dict[TopicPartition, int] | None = None) -> None:
        self._consumer = consumer
        self._listener = listener
        self._timeout_s = timeout_s
        # The LSOs kept from fetch responses: an assigned partition's is forgotten, so that
        # one kept from before a revocation never says it is at its end (it only grows).
        self._stable = {} if stable is None else stable

    def on_assigned(self, sources: list[Source]) -> None:
        """Seek to the committed offsets, then tell the scorer. When they cannot be read,
        the scorer is told all the same and the error follows, raised from poll.

        Why both: the assignment stands whatever the read. A zombie's open transaction holds
        its offsets back (the broker answers "unstable" until the transaction ends, up to
        its timeout), so a take-over after SIGKILL can time out here. Raising before the
        listener ran left the scorer without the event: its intake never tracked the new
        partitions (labels no longer waited for), and health reported "no partitions
        assigned" while it scored them. The error makes the loop rewind, which seeks every
        assigned partition to its committed offset with a fresh client."""
        tps = [topic_partition(s) for s in sources]
        for tp in tps:
            self._stable.pop(tp, None)
        failed: ClientError | None = None
        if tps:
            try:
                committed = self._consumer._coordinator.fetch_committed_offsets(
                    tps, timeout_ms=int(self._timeout_s * 1000))
            except kerr.KafkaError as exc:
                failed = client_error(exc, what="committed offsets")
            else:
                for tp in tps:
                    found = committed.get(tp)
                    offset = found.offset if found is not None and found.offset >= 0 else None
                    seek_to(self._consumer, tp, BEGINNING if offset is None else offset)
        self._listener.on_assigned(sources)
        if failed is not None:
            raise failed

    def on_revoked(self, sources: list[Source]) -> None:
        self._listener.on_revoked(sources)

    def on_lost(self, sources: list[Source]) -> None:
        self._listener.on_lost(sources)


def seek_to(consumer: KafkaConsumer, tp: TopicPartition, offset: int) -> None:
    try:
        if offset == BEGINNING:
            consumer.seek_to_beginning(tp)
        elif offset == _END:
            consumer.seek_to_end(tp)
        else:
            consumer.seek(tp, offset)
    except ValueError as exc:  # not assigned (any more), as librdkafka's _STATE
        raise ClientError(f"seek: {exc}", kind="group_moved") from None


def unpark(consumer: KafkaConsumer, resumed: list[TopicPartition]) -> None:
    """Drop the parsed records kafka-python parked for resumed partitions; their next fetch
    reads them again (positions only move past records `poll` returned).

    Why: kafka-python 3.0 hands parked parsed records back only while its in-line slot is
    None, but a drained slot stays set (empty, not None), and it never fetches a partition
    that has records parked. With two partitions parked at once, the second was never read
    again: `stream run` stalled for good at 179,102 of 200,000 events (make bench, 4
    partitions, the intake pausing partitions that ran ahead).
    """
    fetcher = getattr(consumer, "_fetcher", None)
    parked = getattr(fetcher, "_paused_partition_records", None)
    if not parked:
        return
    for tp in resumed:
        records = parked.pop(tp, None)
        if records is not None:
            records.drain()


def refresh_metadata(consumer: KafkaConsumer, timeout_s: float) -> Any:
    """Every topic's metadata, waiting at most `timeout_s` (KafkaConsumer.topics() waits
    forever when no broker answers); returns kafka-python's cluster metadata."""
    cluster, net, manager = consumer._cluster, consumer._net, consumer._manager
    timeout_ms = max(1, int(timeout_s * 1000))
    started = time.monotonic()
    try:
        if cluster.metadata_refresh_in_progress:  # a partial refresh: let it finish first
            net.run(manager.wait_for, cluster.request_update(), timeout_ms)
        stash = cluster.need_all_topic_metadata
        cluster.need_all_topic_metadata = True
        try:
            net.run(manager.wait_for, cluster.request_update(), timeout_ms)
        finally:
            cluster.need_all_topic_metadata = stash
    except kerr.KafkaError as exc:
        raise WATCH.explain(client_error(exc, what="metadata"), since=started) from None
    return cluster


def _topic_partitions(consumer: KafkaConsumer, timeout_s: float) -> dict[str, int]:
    cluster = refresh_metadata(consumer, timeout_s)
    return {topic: len(cluster.partitions_for_topic(topic) or ())
            for topic in cluster.topics(exclude_internal_topics=False)}


def new_consumer(options: dict[str, Any]) -> KafkaConsumer:
    started = time.monotonic()
    try:
        return KafkaConsumer(**options)
    except kerr.KafkaError as exc:
        error = client_error(exc, what="cannot create a kafka-python consumer")
        raise WATCH.explain(error, since=started) from None


def _commit_done(offsets: Any, response: Any) -> None:
    """Result of an asynchronous offset commit (at-least-once checkpoints). A failure loses
    nothing: the next checkpoint commits later offsets, and a rebalance commits synchronously."""
    if isinstance(response, BaseException):
        log.warning("offset commit failed: %s", response)


class KafkaPythonGroupConsumer:
    """The scorer's group member: explicit commits only, read_committed, range assignor."""

    def __init__(self, options: dict[str, Any], timeout_s: float) -> None:
        self._consumer = new_consumer(options)
        self._timeout_s = timeout_s
        self._commits = AsyncCommits()  # `commit_pending`
        self._bridge = CallerThread(self._consumer._net)
        # partition -> the last stable offset of its latest fetch response
        self._stable = keep_stable_offsets(self._consumer._fetcher)
        # partition -> [position, unchanged since, last stable offset, asked at]: only for a
        # partition whose fetch responses carry no LSO (module docstring)
        self._stuck: dict[TopicPartition, list[Any]] = {}

    def subscribe(self, topics: list[str], listener: RebalanceListener) -> None:
        """Subscribe, then wait for the topics' metadata: kafka-python may otherwise join
        before it knows their partitions, get an empty assignment ("No partition metadata
        for topic") and rebalance again once the metadata arrives."""
        self._bridge.listener = _FromCommitted(self._consumer, listener, self._timeout_s,
                                               self._stable)
        self._consumer.subscribe(topics, listener=self._bridge.kafka_listener())
        try:
            refresh_metadata(self._consumer, min(self._timeout_s, 5.0))
        except ClientError as exc:  # the first poll joins anyway, a rebalance later
            log.debug("subscribe: %s", exc)

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        """Records from kafka-python's poll, run on the bridge's worker (callbacks here). A
        poll still joining the group when `timeout_s` (plus a little) is up returns nothing;
        the next one goes on with it and returns its records (at most `max_records`: the
        rest are given back)."""
        timeout_ms = max(0, int(timeout_s * 1000))
        failed: CallbackError | None = None
        try:
            _, batch = self._bridge.run(lambda: self._poll(timeout_ms, max_records),
                                        wait_s=timeout_s + _SLACK_S, resume=True)
        except CallbackError as exc:
            failed = exc
        except kerr.KafkaError as exc:
            raise client_error(exc, what="poll") from None
        if failed is not None:  # the callback's error; its records handed out next time
            self._give_back(to_records(failed.result or {}))
            raise failed.error
        records = to_records(batch) if batch else []
        if len(records) > max_records:  # from a poll started with a larger max_records
            self._give_back(records[max_records:])
            records = records[:max_records]
        return Polled(records, self._at_end({r.source for r in records}, timeout_s),
                      more=len(records) >= max_records)

    def _give_back(self, records: list[Record]) -> None:
        """Rewind to the first of these records per partition: the next poll returns them."""
        first: dict[Source, int] = {}
        for r in records:
            first.setdefault(r.source, r.offset)
        for source, offset in first.items():
            try:
                self._consumer.seek(topic_partition(source), offset)
            except ValueError:  # not ours any more
                pass

    def _poll(self, timeout_ms: int, max_records: int) -> Any:
        """On the bridge's worker. A rebalance under way is finished first, without the
        poll's short timeout (this job may outlive the poll that started it; the next poll
        resumes it): kafka-python 3.0.12 drops a JoinGroup/SyncGroup result that arrives
        after a poll gave up waiting for it and joins again (join_group_async starts a new
        join when `_join_task` is done instead of taking its result); with every member
        polling every 100 ms that became a rebalance storm in the contract suite."""
        coordinator = self._consumer._coordinator
        if coordinator.need_rejoin():
            coordinator.ensure_active_group(timeout_ms=int(self._timeout_s * 1000))
        return self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)

    def _at_end(self, returned: set[Source], timeout_s: float) -> list[Source]:
        """Partitions at the end read_committed sees (module docstring)."""
        now, stuck, stable, out, ask = time.monotonic(), self._stuck, self._stable, [], []
        states = partition_states(self._consumer)
        assigned = {tp for tp, *_ in states}
        for tp in set(stuck) - assigned:
            del stuck[tp]  # revoked
        for tp in [tp for tp in list(stable) if tp not in assigned]:  # the worker may add
            stable.pop(tp, None)
        for tp, position, high, paused in states:
            if paused or position is None or high is None:
                continue
            lso = stable.get(tp)
            if position >= high or (lso is not None and position >= lso):
                out.append(tp)
                stuck.pop(tp, None)
                continue
            if lso is not None:  # below the end its fetches report: records to come
                continue
            seen = stuck.get(tp)
            if (tp.topic, tp.partition) in returned or seen is None or seen[0] != position:
                stuck[tp] = [position, now, None, 0.0]  # moving: not held back
            elif now - seen[1] >= _STUCK_S and now - seen[3] >= _ASK_S:
                ask.append(tp)
            elif seen[2] is not None and position >= seen[2]:
                out.append(tp)
        if ask:
            try:
                stable = self._consumer.end_offsets(
                    ask, timeout_ms=int(1000 * max(0.1, min(timeout_s, 1.0))))
            except kerr.KafkaError as exc:
                log.debug("last stable offsets: %s", exc)
                stable = {}
            for tp, lso in stable.items():
                stuck[tp][2:] = [lso, now]
                if stuck[tp][0] >= lso:
                    out.append(tp)
        return [(tp.topic, tp.partition) for tp in out]

    def assignment(self) -> list[Source]:
        return _sources(self._consumer.assignment())

    def pause(self, sources: list[Source]) -> None:
        assigned = self._consumer.assignment()
        self._consumer.pause(*[tp for tp in map(topic_partition, sources) if tp in assigned])

    def resume(self, sources: list[Source]) -> None:
        assigned = self._consumer.assignment()
        resumed = [tp for tp in map(topic_partition, sources) if tp in assigned]
        self._consumer.resume(*resumed)
        unpark(self._consumer, resumed)

    def seek(self, source: Source, offset: int) -> None:
        seek_to(self._consumer, topic_partition(source), offset)

    def commit(self, offsets: Mapping[Source, int], asynchronous: bool) -> None:
        if not offsets:
            return
        data = {topic_partition(s): OffsetAndMetadata(o, "", -1) for s, o in offsets.items()}
        try:
            if asynchronous:
                # Counted first: the callback runs at once when the coordinator is unknown.
                self._commits.asked()
                try:
                    self._consumer.commit_async(data, callback=self._commit_heard)
                except BaseException:
                    self._commits.withdrawn()
                    raise
            else:  # bounded: kafka-python retries a synchronous commit forever without one
                self._consumer.commit(data, timeout_ms=int(self._timeout_s * 1000))
                self._commits.confirmed()
        except kerr.KafkaError as exc:
            raise client_error(exc, what="offset commit") from None

    def _commit_heard(self, offsets: Any, response: Any) -> None:
        """An asynchronous commit's callback (run by a later poll, or at once when the
        coordinator is unknown)."""
        self._commits.heard(failed=isinstance(response, BaseException))
        _commit_done(offsets, response)

    def commit_pending(self) -> bool:
        return self._commits.pending

    def group_metadata(self) -> object:
        """kafka-python resets the generation to -1 on its IO thread as soon as a heartbeat
        finds the session expired, before the caller's next poll hears of the lost partitions
        (`clients.GroupConsumer.group_metadata`)."""
        metadata = self._consumer.group_metadata()
        if metadata.generation_id < 0:
            raise without_generation(metadata.group_id)
        return metadata

    def lag(self, positions: Mapping[Source, int]) -> dict[Source, int]:
        out: dict[Source, int] = {}
        for tp, position, high, _paused in partition_states(self._consumer):
            source = (tp.topic, tp.partition)
            at = positions.get(source, position)
            if high is not None and at is not None and at >= 0:
                out[source] = max(0, high - at)
        return out

    def caught_up(self) -> dict[Source, int]:
        return {(tp.topic, tp.partition): high
                for tp, position, high, _paused in partition_states(self._consumer)
                if high is not None and position is not None and position >= high}

    def topic_partitions(self, timeout_s: float) -> dict[str, int]:
        return _topic_partitions(self._consumer, timeout_s)

    def close(self) -> None:
        """Leave the group; `on_revoked` runs here, on the caller's thread, first."""
        failed: CallbackError | None = None
        try:
            self._bridge.run(lambda: self._consumer.close(autocommit=False))
        except CallbackError as exc:
            failed = exc
        except kerr.KafkaError as exc:
            raise client_error(exc, what="close") from None
        finally:
            self._bridge.stop()
        if failed is not None:
            raise failed.error
