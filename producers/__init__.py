"""The llmpulse producer SDK: record LLM calls to Kafka without blocking or failing the caller.

Base install only (confluent-kafka + fastavro): no faust, no numpy.
"""

from llmpulse.producers.admission import AdmissionSettings, BudgetExceeded, Decision
from llmpulse.producers.client import Pulse, PulseStats, pulse_session
from llmpulse.producers.prompt_guard import PromptBlocked
from llmpulse.producers.settings import PulseSettings
from llmpulse.producers.tracking import CallTracker, classify_error

__all__ = ["AdmissionSettings", "BudgetExceeded", "CallTracker", "Decision", "PromptBlocked", "Pulse",
           "PulseSettings", "PulseStats", "classify_error", "pulse_session"]
