"""Contract suites: the conformance checks any correct Encoder, Denoiser, Scheduler, TextConditioner,
Sampler or Dataset passes (docs/architecture.md, "Contract suites").

Two ways to run them. In pytest, subclass a suite and provide the component as a fixture::

    class TestMyScheduler(SchedulerContract):
        @pytest.fixture
        def component(self):
            return MyScheduler(MyConfig())

Without pytest (`diffstack check KIND/NAME`): `run_contract("scheduler", lambda: MyScheduler(MyConfig()))`
returns one `CheckResult` per check.
"""

from core.contracts.base import Contract, NotApplicable
from core.contracts.dataset import DatasetContract
from core.contracts.denoiser import DenoiserContract
from core.contracts.encoder import EncoderContract
from core.contracts.runner import CONTRACTS, CheckResult, run_contract
from core.contracts.sampler import SamplerContract
from core.contracts.scheduler import SchedulerContract
from core.contracts.text import TextConditionerContract

__all__ = [
    "CONTRACTS",
    "CheckResult",
    "Contract",
    "DatasetContract",
    "DenoiserContract",
    "EncoderContract",
    "NotApplicable",
    "SamplerContract",
    "SchedulerContract",
    "TextConditionerContract",
    "run_contract",
]
