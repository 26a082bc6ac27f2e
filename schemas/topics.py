"""Kafka topics of the event contract: their names, the schema each carries and default partition counts."""
from __future__ import annotations

#: Topics and their partition counts. The key of every result event is the patient pseudonym, so one
#: patient's events stay ordered inside one partition; growing a cluster means more partitions and more
#: engine consumers in the same group.
TOPIC_LAB = "hr.results.lab.v1"
TOPIC_IMAGING = "hr.results.imaging.v1"
TOPIC_DEADLETTER = "hr.deadletter.v1"
TOPIC_DECISIONS = "hr.decisions.v1"
TOPIC_FEEDBACK = "hr.feedback.v1"
RESULT_TOPICS = (TOPIC_LAB, TOPIC_IMAGING)
DEFAULT_PARTITIONS = {
    TOPIC_LAB: 6,
    TOPIC_IMAGING: 3,
    TOPIC_DEADLETTER: 1,
    TOPIC_DECISIONS: 3,
    TOPIC_FEEDBACK: 1,
}

#: Which schema a topic carries, and the reverse by the event's ``schema`` field.
SCHEMA_OF_TOPIC = {TOPIC_LAB: "lab-result.v1", TOPIC_IMAGING: "imaging-result.v1"}
TOPIC_OF_SCHEMA = {"hr.lab-result.v1": TOPIC_LAB, "hr.imaging-result.v1": TOPIC_IMAGING}
