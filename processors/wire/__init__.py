"""Bytes on the wire <-> records: what the worker reads from the calls topic and what it writes back.

* ``calls``: calls-topic records (``llm_call_batch`` and single ``llm_call``, single-object Avro) -> CallColumns,
  with the refused parts and their dead-letter reasons.
* ``registry``: the Confluent Schema Registry framing of the same contracts.
* ``outputs``: the Avro records the worker writes (alerts, incidents, dead letters, commands).

The single-object Avro codec itself is shared with the SDK: ``llmpulse.schemas.single_object``.
"""
