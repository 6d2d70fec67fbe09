"""The customisation evaluators, validated on renders (``python -m sara.customisation_checks
validate``): how often CLIP-I ranks a render of the right subject above one of another subject, and
how often the ground-truth detector finds each subject (alone, beside one or two ordinary objects,
with its colours shifted) or wrongly finds it (other subjects, its shape and colours in another
pattern, the domain's scenes).

Reads the validation's JSON (the committed copy: ``results/embedded/subject_validation.json``).
Writes ``subject_validation.md``.

    python -m analysis.subject_validation --json results/embedded/subject_validation.json --out outputs/analysis/custom
"""
from __future__ import annotations

from .common import markdown_table, record_report

NAME = "subject_validation"
FOUND = (("found_alone", "alone"), ("found_one_object", "beside one object"), ("found_two_objects", "beside two"),
         ("found_colour_shifted", "colours shifted"))
FALSE = (("false_other_subjects", "other subjects"), ("false_other_pattern", "another pattern"),
         ("false_domain_scenes", "domain scenes"))


def lines(res: dict) -> list[str]:
    det = res["detector"]
    clip = [[s, f"{v:.1%}"] for s, v in res["per_subject"].items()]
    clip += [["all, alone or beside one object", f"**{res['share_correct']:.1%}**"],
             ["all, beside two objects", f"{res['share_two_objects']:.1%}"]]
    rows = [[s, *[f"{r[k]:.1%}" for k, _ in FOUND], *[f"{r[k]:.1%}" for k, _ in FALSE]]
            for s, r in det["per_subject"].items()]
    return [f"Command: `{res['command']}` ({res['wall_s']:.0f} s); renders at {det['size']} px never in the "
            f"subject folders, seed {det['seed']}.", "",
            f"**CLIP-I** ({res['evaluator']}): share of pairs (render of the subject, render of another subject, "
            f"same layout) in which the subject's render is closer to its reference images; "
            f"{res['n_per_subject_and_layout']} renders per subject and layout, {res['pairs']:,} pairs.", "",
            markdown_table(clip, ["subject", "right subject ranked first"]), "",
            f"**Ground-truth detector** (`{det['ground_truth']}`): share of {det['n']} renders per column in which "
            f"it finds the subject (colours shifted: each by {det['colour_shift']:.0f} in a random RGB direction), "
            f"and share of false finds ({10 * det['n']} domain scenes).", "",
            markdown_table(rows, ["subject", *[f"found: {n}" for _, n in FOUND], *[f"false: {n}" for _, n in FALSE]])]


def main(argv=None):
    return record_report(argv, __doc__, NAME, "Customisation evaluators, validated",
                         "results/embedded/subject_validation.json", "outputs/analysis/custom",
                         "python -m sara.customisation_checks validate out=FILE", lines)


if __name__ == "__main__":
    main()
