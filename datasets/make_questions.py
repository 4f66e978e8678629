"""Make ``datasets/questions``: a small, seeded set of questions labelled by the kind of answer.

It ships with tlkit so the text CNN can be tried offline, as ``datasets/shapes`` does for
images: three classes (``person``, ``place``, ``number``, after TREC's HUM, LOC and NUM),
asked in several phrasings each, so that no single word gives the class away. The files are
split tables (``train.csv``, ``test.csv``), which ``--data datasets/questions`` reads as such.
Run from the repository root to regenerate them byte for byte:

    python datasets/make_questions.py --out datasets/questions
"""

from __future__ import annotations

import argparse
import csv
import random
from itertools import product
from pathlib import Path

THINGS = ("the telephone", "the light bulb", "penicillin", "the printing press", "radio",
          "the steam engine", "the World Wide Web", "jazz", "the periodic table", "calculus")
WORKS = ("Hamlet", "Don Quixote", "War and Peace", "the Odyssey", "Pride and Prejudice",
         "the Mona Lisa", "the Ninth Symphony", "Guernica", "Moby Dick", "The Republic")
PLACES = ("France", "Japan", "Kenya", "Peru", "Canada", "Egypt", "Norway", "India", "Chile",
          "Australia")
EVENTS = ("the first moon landing", "the fall of the Berlin Wall", "the Battle of Hastings",
          "the first modern Olympics", "the signing of the Magna Carta",
          "the first flight of the Wright brothers", "the end of the Second World War")
TEMPLATES = {
    "person": ("Who invented {thing} ?", "Who wrote {work} ?", "Name the creator of {work} .",
               "Which scientist is credited with {thing} ?", "Who was the first king of {place} ?",
               "What was the name of the person behind {thing} ?"),
    "place": ("Where was {thing} invented ?", "What is the capital of {place} ?",
              "Where was {work} first made public ?", "Where did {event} take place ?",
              "Which city is the largest in {place} ?", "What river flows through {place} ?"),
    "number": ("How many people live in {place} ?", "In what year was {thing} invented ?",
               "How old was the creator of {work} then ?", "When did {event} happen ?",
               "How many years ago was {work} made ?", "What is the population of {place} ?"),
}


def questions(per_class: int, rng: random.Random) -> list[tuple[str, str]]:
    """``per_class`` distinct (question, class) pairs per class, in a seeded order."""
    rows = []
    for label, templates in TEMPLATES.items():
        pool = sorted({template.format(thing=thing, work=work, place=place, event=event)
                       for template in templates
                       for thing, work, place, event in product(THINGS, WORKS, PLACES, EVENTS)})
        rows += [(text, label) for text in rng.sample(pool, min(per_class, len(pool)))]
    rng.shuffle(rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("datasets/questions"))
    parser.add_argument("--per-class", type=int, default=55)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = questions(args.per_class, random.Random(args.seed))
    test_count = round(args.per_class * args.test_fraction)
    seen: dict[str, int] = {}
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    for row in rows:  # the first test_count questions of each class are its test questions
        seen[row[1]] = seen.get(row[1], 0) + 1
        splits["test" if seen[row[1]] <= test_count else "train"].append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    for split, part in splits.items():
        with (args.out / f"{split}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["text", "label"])
            writer.writerows(part)
    print(f"wrote {len(splits['train'])} training and {len(splits['test'])} test questions "
          f"to {args.out}")


if __name__ == "__main__":
    main()
