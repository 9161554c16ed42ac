"""``flowkit split-lists hmdb51 SPLIT_DIR -o OUT``: a dataset's official split as UCF101-style lists."""
from __future__ import annotations

from pathlib import Path

import click

from ..annotations import HMDB51_SPLITS, read_hmdb51_split, write_split_lists
from . import handle_errors, summary


@click.command("split-lists", short_help=summary("split-lists"))
@click.argument("dataset", type=click.Choice(["hmdb51"]))
@click.argument("split_dir", type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice([str(s) for s in HMDB51_SPLITS]), default="1",
              show_default=True, help="Which of the dataset's splits.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for trainlist0N.txt, testlist0N.txt and classInd.txt.")
@handle_errors
def command(dataset, split_dir, split, out_dir):
    """Write split SPLIT of DATASET as UCF101's lists: trainlist0N.txt (`class/video.avi id`),
    testlist0N.txt and classInd.txt, which `flowkit train --split-list / --val-list` and `flowkit
    evaluate --split-list` take. For HMDB51, SPLIT_DIR is its testTrainMulti_7030_splits folder
    (`<class>_test_split<N>.txt`: 1 training, 2 testing, 0 neither); class ids follow the sorted
    class names, as `flowkit extract` numbers HMDB51's class folders.

    \b
    Examples:
      flowkit split-lists hmdb51 testTrainMulti_7030_splits/ --split 1 -o L/
      flowkit train STORE --model i3d -o R --split-list L/trainlist01.txt --val-list L/testlist01.txt
      flowkit evaluate R STORE --split-list L/testlist01.txt
    """
    lists = read_hmdb51_split(split_dir, int(split))
    paths = write_split_lists(out_dir, lists, int(split))
    click.echo(f"{dataset} split {split}: {len(lists.train)} training and {len(lists.test)} test "
               f"videos of {len(lists.classes)} classes ({len(lists.unused)} in neither) -> "
               f"{paths['train']}, {paths['test']}, {paths['classes']}")
