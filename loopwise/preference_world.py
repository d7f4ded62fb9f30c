"""A bundled offline preference example with known truth (issue 15, item 5).

Prompts ask to explain a topic; each has candidate answers written by four named
"models" from templated sentences. An answer's hidden quality is a known linear function
of which traits it shows (a worked example, a source, a correct core statement, a wrong
one, rudeness, hedging, a digression...), so the truth is exact and a text model can learn
it only from the words. Reviewers are simulated Bradley-Terry judges on that quality,
``P(first over second) = sigmoid((q1 - q2) / scale)``, with ``scale`` set so that two
unbiased reviewers agree on a random pair ``agreement`` of the time (published human
agreement on pairwise preference sets is about 73-77%; default 0.75), and a known
position bias: a reviewer with bias ``b`` picks the first-shown answer outright with
probability ``b`` and judges otherwise.

The Bayes accuracy a reward model can reach when predicting an unbiased reviewer's
choice is ``E[max(p, 1 - p)]`` over the pairs: the ceiling of the benchmark.
Deterministic given the seed. Pure: no I/O.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

TOPICS = (
    "photosynthesis", "compound interest", "plate tectonics", "vaccination", "inflation",
    "recursion", "the water cycle", "supply and demand", "natural selection", "encryption",
    "black holes", "the immune system", "machine learning", "climate feedback", "tides",
    "electric circuits", "protein folding", "public key signatures", "the stock market",
    "volcanoes", "sleep cycles", "ocean currents", "gravity", "antibiotics",
)
AUDIENCES = ("a child", "a student", "a manager", "a nurse", "an engineer", "a retiree")

# trait -> (weight in the hidden quality, sentences that show it; {t} is the topic)
TRAITS: dict[str, tuple[float, tuple[str, ...]]] = {
    "correct": (1.6, ("The central idea of {t} is explained correctly and precisely.",
                      "At its core, {t} works by a well understood mechanism, stated accurately.",
                      "Put accurately, {t} follows from a few established principles.")),
    "wrong": (-1.8, ("Contrary to experts, {t} is basically a myth invented recently.",
                     "In fact {t} works backwards, opposite to what textbooks claim.",
                     "Honestly {t} has no cause at all, it just happens randomly.")),
    "example": (0.9, ("For example, picture a kitchen experiment that shows {t} at work.",
                      "A concrete example: an everyday situation where {t} is visible.",
                      "Consider an example from daily life that illustrates {t}.")),
    "source": (0.6, ("According to a standard textbook, this account of {t} is accepted.",
                     "Reference: the encyclopedia entry on {t} gives the same account.",
                     "Source: a review article summarises {t} this way.")),
    "steps": (0.5, ("Step one sets the scene, step two shows the mechanism of {t}.",
                    "First the cause, then the effect, then what {t} changes.",
                    "In three steps: start, process, and outcome of {t}.")),
    "hedge": (-0.5, ("I might be wrong, maybe, perhaps it depends, hard to say.",
                     "Possibly, though I am not sure, it could be otherwise.",
                     "Perhaps, I guess, it is unclear, who knows really.")),
    "rude": (-1.2, ("Obviously anyone should know this already, it is trivial.",
                    "Frankly this question is silly and a waste of time.",
                    "Come on, this is so basic it hardly needs an answer.")),
    "digression": (-0.7, ("By the way, my favourite football team won yesterday.",
                          "Unrelated, but the weather has been lovely this week.",
                          "Side note: I once visited a castle with great gardens.")),
}
FILLER = ("This answer is about {t}.", "Here is what matters about {t}.",
          "Let us talk about {t}.", "Now, {t}.")

# model name -> probability of each trait in its answers
MODELS: dict[str, dict[str, float]] = {
    "model-careful": {"correct": 0.8, "wrong": 0.05, "example": 0.6, "source": 0.6,
                      "steps": 0.5, "hedge": 0.3, "rude": 0.02, "digression": 0.1},
    "model-fast": {"correct": 0.55, "wrong": 0.2, "example": 0.3, "source": 0.1,
                   "steps": 0.5, "hedge": 0.1, "rude": 0.1, "digression": 0.2},
    "model-chatty": {"correct": 0.6, "wrong": 0.15, "example": 0.7, "source": 0.2,
                     "steps": 0.2, "hedge": 0.5, "rude": 0.05, "digression": 0.6},
    "model-blunt": {"correct": 0.6, "wrong": 0.25, "example": 0.2, "source": 0.3,
                    "steps": 0.4, "hedge": 0.05, "rude": 0.5, "digression": 0.1},
}


@dataclass(frozen=True)
class Candidate:
    candidate_id: str
    model: str
    text: str
    quality: float  # hidden: never posted, only for checking


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    text: str
    candidates: tuple[Candidate, ...]

    def pairs(self) -> list[tuple[Candidate, Candidate]]:
        return list(itertools.combinations(self.candidates, 2))


@dataclass(frozen=True)
class Reviewer:
    name: str
    position_bias: float  # the share of comparisons where they pick the first shown outright


def _answer(rng: np.random.Generator, topic: str, model: str) -> tuple[str, float]:
    shown = [t for t, p in MODELS[model].items() if rng.random() < p]
    if "correct" in shown and "wrong" in shown:  # one core statement per answer
        shown.remove("wrong" if rng.random() < 0.5 else "correct")
    body = [str(rng.choice(TRAITS[t][1])).format(t=topic) for t in shown]
    rng.shuffle(body)
    quality = sum(TRAITS[t][0] for t in shown)
    return " ".join([str(rng.choice(FILLER)).format(t=topic), *body]), float(quality)


def make_prompts(n: int, seed: int, start: int = 0) -> list[Prompt]:
    """``n`` prompts, each with one answer per model (four candidates, six pairs)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(start, start + n):
        topic = TOPICS[int(rng.integers(len(TOPICS)))]
        audience = AUDIENCES[int(rng.integers(len(AUDIENCES)))]
        candidates = []
        for j, model in enumerate(MODELS):
            text, quality = _answer(rng, topic, model)
            candidates.append(Candidate(f"c{j}", model, text, quality))
        out.append(Prompt(f"p{i}", f"Explain {topic} to {audience}.", tuple(candidates)))
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(expit(x), dtype=np.float64)


def agreement_at(scale: float, differences: np.ndarray) -> float:
    """The chance two unbiased reviewers agree on a pair, averaged over the pairs."""
    p = _sigmoid(differences / scale)
    return float(np.mean(p * p + (1 - p) * (1 - p)))


def scale_for(agreement: float, differences: np.ndarray) -> float:
    """The Bradley-Terry scale at which unbiased reviewers agree ``agreement`` of the time
    (bisection: agreement falls as the scale grows)."""
    lo, hi = 1e-3, 1e3
    if not agreement_at(hi, differences) < agreement < agreement_at(lo, differences):
        raise ValueError(f"agreement {agreement} is out of reach on these pairs")
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if agreement_at(mid, differences) > agreement else (lo, mid)
    return math.sqrt(lo * hi)


@dataclass
class World:
    """Prompts for training and for testing, reviewers and the judging rule."""

    train: list[Prompt]
    test: list[Prompt]
    reviewers: list[Reviewer]
    scale: float
    seed: int

    @classmethod
    def make(cls, seed: int, train_prompts: int = 400, test_prompts: int = 100,
             agreement: float = 0.75,
             biases: tuple[float, ...] = (0.0,) * 8 + (0.3, 0.6)) -> World:
        prompts = make_prompts(train_prompts + test_prompts, seed)
        differences = np.array([a.quality - b.quality for p in prompts for a, b in p.pairs()])
        reviewers = [Reviewer(f"reviewer-{i}", b) for i, b in enumerate(biases)]
        return cls(prompts[:train_prompts], prompts[train_prompts:], reviewers,
                   scale_for(agreement, differences), seed)

    def p_first(self, first: Candidate, second: Candidate) -> float:
        """P(an unbiased reviewer prefers ``first``)."""
        return float(_sigmoid(np.array((first.quality - second.quality) / self.scale)))

    def judge(self, reviewer: Reviewer, first: Candidate, second: Candidate,
              rng: np.random.Generator) -> int:
        """The position (1 or 2) the reviewer prefers, the candidates shown in this order."""
        if rng.random() < reviewer.position_bias:
            return 1
        return 1 if rng.random() < self.p_first(first, second) else 2

    def bayes_accuracy(self, prompts: list[Prompt] | None = None) -> float:
        """The best expected accuracy any model can reach predicting an unbiased
        reviewer's choice on these pairs (the test prompts by default)."""
        ps = [self.p_first(a, b) for p in (prompts or self.test) for a, b in p.pairs()]
        return float(np.mean([max(p, 1 - p) for p in ps]))

    def expected_accuracy(self, prefers_first: np.ndarray,
                          prompts: list[Prompt] | None = None) -> float:
        """A predictor's expected accuracy against an unbiased reviewer on these pairs
        (exact: no sampled test judgments), ``prefers_first[i]`` for pair i of the list."""
        ps = np.array([self.p_first(a, b) for p in (prompts or self.test) for a, b in p.pairs()])
        picks = np.asarray(prefers_first, dtype=bool)
        return float(np.mean(np.where(picks, ps, 1 - ps)))
