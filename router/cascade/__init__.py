"""The cascade verifier: a tier's answer (text, optional logprobs) -> accept or escalate."""

from router.cascade.verifier import Verdict, Verifier

__all__ = ["Verdict", "Verifier"]
