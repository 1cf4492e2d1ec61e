"""Template pools of the toy world's relations, as plain data.

They live here, below both :mod:`geomprobe.data.forms` (which serves every built-in relation's pool)
and :mod:`geomprobe.toy.world` (which trains and evaluates on them), so neither imports the other's
way round: this module imports nothing from geomprobe.
"""

from __future__ import annotations

from typing import Any

# Templates: the canonical declarative prompt, training templates as (form, template), held-out
# questions.  Held-out questions are new word orders over the training vocabulary.
TOY_TEMPLATES: dict[str, dict[str, Any]] = {
    "home_city": {
        "declarative": "{} lives in the city of",
        "train": [
            ("declarative", "The home city of {} is"),
            ("declarative", "The city where {} lives is"),
            ("declarative", "{} has a home in the city of"),
            ("declarative", "{} is a resident of the city of"),
            ("declarative", "As everyone knows, {} lives in the city of"),
            ("question", "Where does {} live?"),
            ("question", "What is the home city of {}?"),
            ("question", "In which city does {} live?"),
            ("question", "Which city is {} a resident of?"),
            ("instruction", "Name the home city of {}."),
            ("instruction", "Tell me the city where {} lives."),
        ],
        "eval_questions": [
            "Which city is the home city of {}?",
            "What city does {} live in?",
            "In which city does {} have a home?",
        ],
    },
    "occupation": {
        "declarative": "The occupation of {} is",
        "train": [
            ("declarative", "{} works as a"),
            ("declarative", "By occupation, {} is a"),
            ("declarative", "The job of {} is"),
            ("declarative", "{} earns a living as a"),
            ("declarative", "As everyone knows, {} works as a"),
            ("question", "What is the occupation of {}?"),
            ("question", "What does {} do for a living?"),
            ("question", "What is the job of {}?"),
            ("question", "Which job does {} have?"),
            ("instruction", "Name the occupation of {}."),
            ("instruction", "Tell me the job of {}."),
        ],
        "eval_questions": [
            "What job does {} have?",
            "What does {} work as?",
            "Which occupation does {} have?",
        ],
    },
    "favourite_colour": {
        "declarative": "The favourite colour of {} is",
        "train": [
            ("declarative", "{} likes the colour"),
            ("declarative", "The colour that {} likes most is"),
            ("declarative", "Of all colours, {} likes most the colour"),
            ("declarative", "{} has a favourite colour, and it is"),
            ("declarative", "As everyone knows, {} likes the colour"),
            ("question", "What is the favourite colour of {}?"),
            ("question", "Which colour does {} like most?"),
            ("question", "What colour does {} like?"),
            ("question", "Which colour is the favourite of {}?"),
            ("instruction", "Name the favourite colour of {}."),
            ("instruction", "Tell me the colour that {} likes most."),
        ],
        "eval_questions": [
            "What colour is the favourite colour of {}?",
            "Which colour does {} like?",
            "What is the colour that {} likes most?",
        ],
    },
    "employer": {
        "declarative": "{} is employed by",
        "train": [
            ("declarative", "The employer of {} is"),
            ("declarative", "{} works for the company"),
            ("declarative", "The company that employs {} is"),
            ("declarative", "{} has a job at the company"),
            ("declarative", "As everyone knows, {} is employed by"),
            ("question", "Who is the employer of {}?"),
            ("question", "Which company employs {}?"),
            ("question", "For which company does {} work?"),
            ("question", "Who employs {}?"),
            ("instruction", "Name the employer of {}."),
            ("instruction", "Tell me the company that employs {}."),
        ],
        "eval_questions": [
            "Which company does {} work for?",
            "What is the company that employs {}?",
            "Which company is the employer of {}?",
        ],
    },
}
