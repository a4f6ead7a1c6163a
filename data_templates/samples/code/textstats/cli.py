"""Print statistics of a text file: python cli.py FILE [--top N]."""

import argparse
import sys

from textstats import flesch_reading_ease, sentence_count, word_count, word_frequencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=5, help="how many frequent words to show")
    args = parser.parse_args(argv)
    try:
        with open(args.path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as err:
        print(f"cannot read {args.path}: {err}", file=sys.stderr)
        return 1
    print(f"words:      {word_count(text)}")
    print(f"sentences:  {sentence_count(text)}")
    print(f"readability {flesch_reading_ease(text):.1f}")
    for word, count in word_frequencies(text, args.top):
        print(f"  {word:<15} {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
