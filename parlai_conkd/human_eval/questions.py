"""The comparison questions, phrased the ACUTE-Eval way.

ACUTE-Eval asks one question per comparison with two choice sentences in which ``<Speaker 1>`` /
``<Speaker 2>`` stand for the two conversations' evaluated speakers (``eval_question``,
``s1_choice``, ``s2_choice`` in its blueprint). A study may ask several questions; every result
records the question text, and the analysis groups by it.
"""

from dataclasses import asdict, dataclass
from typing import Dict, List


@dataclass(frozen=True)
class Question:
    key: str
    question: str
    s1_choice: str
    s2_choice: str

    def to_dict(self) -> Dict[str, str]:
        return asdict(self)


PRESETS: Dict[str, Question] = {
    q.key: q
    for q in (
        Question(
            'talk',
            'Which recommender would you rather talk to?',
            'I would rather talk to <Speaker 1>',
            'I would rather talk to <Speaker 2>',
        ),
        Question(
            'recommend',
            'Which recommender gave better recommendations?',
            '<Speaker 1> gave better movie recommendations',
            '<Speaker 2> gave better movie recommendations',
        ),
        Question(
            'fluency',
            'Which recommender was more fluent?',
            '<Speaker 1> sounds more fluent and natural',
            '<Speaker 2> sounds more fluent and natural',
        ),
    )
}


def resolve(keys: List[str]) -> List[Question]:
    """Preset keys -> questions; a clear error names the unknown key and the known ones."""
    if not keys:
        raise ValueError('at least one question is needed')
    unknown = [k for k in keys if k not in PRESETS]
    if unknown:
        raise ValueError(f'unknown question(s) {unknown}; known: {sorted(PRESETS)}')
    return [PRESETS[k] for k in keys]


def key_of(question_text: str) -> str:
    """The preset key of a question text, or the text itself for custom questions."""
    for q in PRESETS.values():
        if q.question == question_text:
            return q.key
    return question_text
