"""Labels in other tools' formats (flowkit/annotations.py): mmaction2 lists and label maps,
Kinetics CSV matched to video names, and `flowkit extract --annotations`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from click.testing import CliRunner

from flowkit.annotations import (format_list_line, match_annotations, match_kinetics, match_list,
                                 read_hmdb51_split, read_keys, read_kinetics_csv, read_label_map,
                                 read_mmaction_list, merge_class_names, write_mmaction_list,
                                 write_split_lists)
from flowkit.cli import main
from flowkit.errors import FlowkitError
from flowkit.store import FlowStore
from flowkit.store.labelling import stand_in_note

KINETICS_CSV = """label,youtube_id,time_start,time_end,split,is_cc
abseiling,--07WQ2iBlw,1,11,train,0
"air drumming",-_8ZHi4Yy5I,12,22,train,0
abseiling,0e6bJGSgZ-g,0,10,train,0
abseiling,gone-video1,30,40,train,0
"air drumming",idonly_vid1,5,15,train,0
"""


def test_mmaction_rawframes_list_round_trip(tmp_path):
    path = tmp_path / "ucf101_train_split_1_rawframes.txt"
    rows = [("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01", 121, 0),
            ("Archery/v_Archery_g01_c01", 90, 2)]
    assert write_mmaction_list(path, rows) == 2
    assert path.read_text() == ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01 121 0\n"
                                "Archery/v_Archery_g01_c01 90 2\n")
    entries = read_mmaction_list(path)
    assert [(e.path, e.total_frames, e.labels) for e in entries] == \
        [(p, n, (label,)) for p, n, label in rows]
    assert format_list_line("a/b.mp4", None, 3) == "a/b.mp4 3\n"  # a video list line


def test_mmaction_video_list_keys_and_errors(tmp_path):
    path = tmp_path / "k400_val_list_videos.txt"
    path.write_text("abseiling/x_000001_000011.mp4 0\n\nair_drumming/y.mp4 1\n")
    entries = read_mmaction_list(path, kind="videos")
    assert [e.key for e in entries] == ["abseiling/x_000001_000011", "air_drumming/y"]
    assert read_keys(path) == ["abseiling/x_000001_000011", "air_drumming/y"]
    path.write_text("a/b.mp4 0\na/c.mp4 zero\n")
    with pytest.raises(FlowkitError, match=r"k400_val_list_videos.txt:2: expected 'path label'"):
        read_mmaction_list(path, kind="videos")
    with pytest.raises(FlowkitError, match=":1: expected 'frame_dir total_frames label'"):
        read_mmaction_list(path, kind="rawframes")


def test_mmaction_list_errors_name_the_file_and_line(tmp_path):
    """A negative label (mmaction2 ids are 0-based) and a label beyond the label map are refused,
    naming where: either would otherwise label videos with a class that does not exist."""
    path = tmp_path / "train_list.txt"
    path.write_text("jump/j0 10 0\nrun/r0 10 -1\n")
    with pytest.raises(FlowkitError, match=r"train_list.txt:2: labels must be 0-based class ids, "
                                           r"got \[-1\]"):
        read_mmaction_list(path)
    path.write_text("jump/j0 10 0\nrun/r0 10 2\n")
    label_map = tmp_path / "label_map.txt"
    label_map.write_text("jump\nrun\n")
    with pytest.raises(FlowkitError, match=r"train_list.txt: label 2 is out of range of the label "
                                           r"map's 2 classes"):
        match_annotations(path, ["jump/j0", "run/r0"], label_map=label_map)


def test_read_keys_keeps_a_repeated_video_once(tmp_path):
    """A list naming a video twice gives its key once (in first-seen order): a video is extracted
    or evaluated once."""
    path = tmp_path / "list.txt"
    path.write_text("a/x.avi 1\na/x.avi 1\nb/y.avi 2\na/x.avi 1\n")
    assert read_keys(path) == ["a/x", "b/y"]


def test_flat_list_gets_numbered_class_names(tmp_path):
    """Videos of two labels all in one folder say nothing about class names: the classes are
    class_0, class_1 (distinct), not the folder's name twice."""
    path = tmp_path / "list.txt"
    path.write_text("videos/a 4 0\nvideos/b 4 1\nvideos/c 4 0\n")
    match = match_list(read_mmaction_list(path), ["videos/a", "videos/b", "videos/c"], str(path))
    assert match.classes == ["class_0", "class_1"]
    assert match.labels == {"videos/a": (0, "class_0"), "videos/b": (1, "class_1"),
                            "videos/c": (0, "class_0")}


def test_match_list_by_path_or_unique_name_with_folder_class_names(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("run/r0 10 1\nr1 12 1\njump/j0 8 0\nnothere/zz 5 0\nrun/r2 9 0 1\n")
    keys = ["run/r0", "run/r1", "jump/j0", "jump/j1", "run/r2"]
    match = match_list(read_mmaction_list(path), keys, str(path))
    assert match.labels == {"run/r0": (1, "run"), "run/r1": (1, "run"), "jump/j0": (0, "jump")}
    assert match.classes == ["jump", "run"]
    assert match.total_frames == {"run/r0": 10, "run/r1": 12, "jump/j0": 8}
    assert match.unmatched == [f"{path}:4 nothere/zz", f"{path}:5 run/r2"]  # multi-label: unused
    assert match.multi_label == [f"{path}:5 run/r2"]
    assert match.unlabelled == ["jump/j1", "run/r2"]
    report = match.report()  # each row once, under its reason
    assert report[1] == f"1 rows match no video: {path}:4 nothere/zz"
    assert report[2].startswith("1 rows give several labels, and flowkit trains one label a video")
    assert report[2].endswith(f": {path}:5 run/r2") and "with_offset" in report[2]
    label_map = tmp_path / "label_map.txt"
    label_map.write_text("jumping\nrunning\n")
    named = match_annotations(path, keys, label_map=label_map)
    assert named.labels["run/r0"] == (1, "running") and read_label_map(label_map) == named.classes


def test_class_names_merge_over_the_lists_of_one_dataset():
    """Names come from the union of the lists' (label -> class folder) pairs: a list lacking a
    class is named by another, and alone keeps the names it has (class_<id> for the id it
    lacks); a flat list names nothing; a folder two labels share, across lists, is refused
    naming both."""
    train = {"jump/j0": 0, "run/r0": 1, "walk/w0": 2}
    val = {"run/r1": 1, "walk/w1": 2}
    assert merge_class_names([("val", val)]) == ["class_0", "run", "walk"]
    assert merge_class_names([("train", train), ("val", val)]) == ["jump", "run", "walk"]
    assert merge_class_names([("val", val), ("flat", {"x": 0, "y": 1})]) == \
        ["class_0", "run", "walk"]
    assert merge_class_names([("train", train), ("flat", {"x": 0, "y": 1})]) == \
        ["jump", "run", "walk"]
    with pytest.raises(FlowkitError, match="class folder 'run' is label 1 in train but 3 in b"):
        merge_class_names([("train", train), ("b", {"run/r2": 3})])


def test_a_row_matching_several_videos_by_name_is_ambiguous_not_unmatched(tmp_path):
    """A bare name two classes share (jump/v1, walk/v1) labels neither and is reported with its
    candidates (it used to read "rows match no video")."""
    path = tmp_path / "list.txt"
    path.write_text("v1 4 0\nv2 4 1\nzz 4 0\n")
    match = match_list(read_mmaction_list(path), ["jump/v1", "walk/v1", "run/v2"], str(path))
    assert list(match.labels) == ["run/v2"]
    assert match.ambiguous == {f"{path}:1 v1": ["jump/v1", "walk/v1"]}
    assert match.unmatched == [f"{path}:1 v1", f"{path}:3 zz"]
    assert match.unlabelled == ["jump/v1", "walk/v1"]
    report = match.report()
    assert report[1] == f"1 rows match no video: {path}:3 zz"
    assert report[2].startswith("1 rows match several videos by name and label none of them")
    assert report[2].endswith(f": {path}:1 v1 (matches jump/v1, walk/v1)")


def test_kinetics_csv_maps_labels_and_lists_what_does_not_match(tmp_path):
    path = tmp_path / "kinetics_train.csv"
    path.write_text(KINETICS_CSV)
    rows = read_kinetics_csv(path)
    assert rows[1].label == "air drumming" and rows[1].time_start == 12 and rows[0].split == "train"
    keys = ["abseiling/--07WQ2iBlw_000001_000011",     # mmaction2's padded name
            "train/-_8ZHi4Yy5I_12_22",                  # unpadded, other folder
            "0e6bJGSgZ-g_000000_000010",                # at the root
            "air_drumming/idonly_vid1",                 # <youtube_id>.mp4
            "abseiling/not_in_csv_000001_000002"]       # no row
    match = match_kinetics(rows, keys, str(path))
    assert match.classes == ["abseiling", "air drumming"]
    assert match.labels == {"abseiling/--07WQ2iBlw_000001_000011": (0, "abseiling"),
                            "train/-_8ZHi4Yy5I_12_22": (1, "air drumming"),
                            "0e6bJGSgZ-g_000000_000010": (0, "abseiling"),
                            "air_drumming/idonly_vid1": (1, "air drumming")}
    assert match.unmatched == [f"{path}:5 gone-video1"]
    assert match.unlabelled == ["abseiling/not_in_csv_000001_000002"]
    assert match.report()[1:] == [f"1 rows match no video: {path}:5 gone-video1",
                                  "1 videos have no label: abseiling/not_in_csv_000001_000002"]


def test_kinetics_csv_ids_come_from_the_label_map(tmp_path):
    """A validation CSV or a subset of the classes keeps the ids of the label map (not of its own
    sorted labels); a label the map lacks is an error naming it."""
    path = tmp_path / "kinetics_val.csv"
    path.write_text(KINETICS_CSV)
    label_map = tmp_path / "label_map_k400.txt"
    label_map.write_text("abseiling\nadjusting glasses\nair drumming\n")
    keys = ["--07WQ2iBlw_000001_000011", "-_8ZHi4Yy5I_000012_000022"]
    match = match_annotations(path, keys, label_map=label_map)
    assert match.classes == ["abseiling", "adjusting glasses", "air drumming"]
    assert match.labels == {keys[0]: (0, "abseiling"), keys[1]: (2, "air drumming")}
    label_map.write_text("abseiling\n")
    with pytest.raises(FlowkitError, match=r"kinetics_val.csv: labels 'air drumming' \(line 3\) "
                                           r"are not in the label map of 1 classes"):
        match_annotations(path, keys, label_map=label_map)


def test_kinetics_test_csv_without_labels_and_bad_files(tmp_path):
    path = tmp_path / "kinetics_test.csv"
    path.write_text("youtube_id,time_start,time_end,split\nabc_def_ghi,0,10,test\n")
    match = match_annotations(path, ["abc_def_ghi_000000_000010"])
    assert match.labels == {} and match.unlabelled == ["abc_def_ghi_000000_000010"]
    path.write_text("label,id\nx,y\n")
    with pytest.raises(FlowkitError, match="not a Kinetics CSV"):
        read_kinetics_csv(path)
    path.write_text("label,youtube_id,time_start,time_end,split\nx,abc,zero,10,train\n")
    with pytest.raises(FlowkitError, match=r"kinetics_test.csv:2: time_start / time_end"):
        read_kinetics_csv(path)
    path.write_text("label,youtube_id,time_start,time_end,split\nx,abc,10,20,train\nx,def,10\n")
    with pytest.raises(FlowkitError, match=r"kinetics_test.csv:3: 3 fields, the header has 5"):
        read_kinetics_csv(path)  # a truncated row, not an IndexError or a row without its end


def test_extract_with_a_kinetics_csv(sample_videos, tmp_path):
    root = tmp_path / "k400" / "train"
    root.mkdir(parents=True)
    names = ["--07WQ2iBlw_000001_000011", "-_8ZHi4Yy5I_000012_000022", "unknown_000001_000002"]
    sources = sorted(sample_videos.rglob("*.mp4"))
    for name, src in zip(names, sources):
        shutil.copy(src, root / f"{name}.mp4")
    csv_file = tmp_path / "kinetics_train.csv"
    csv_file.write_text(KINETICS_CSV)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "250"}
    out = subprocess.run([sys.executable, "-m", "flowkit", "extract", str(root), "-o",
                          str(tmp_path / "store"), "--annotations", str(csv_file), "--max-frames",
                          "3", "--no-compile", "--param", "nscales=1", "--param", "warps=1",
                          "--param", "outer_iterations=1", "--param", "inner_iterations=2"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "labels: 2 videos labelled (2 classes)" in out.stderr
    assert "3 rows match no video" in out.stderr  # 0e6bJGSgZ-g, gone-video1, idonly_vid1
    assert "1 videos have no label: unknown_000001_000002" in out.stderr
    store = FlowStore(tmp_path / "store")
    assert store.classes == ["abseiling", "air drumming"]
    assert store.keys() == sorted(names[:2])
    assert store.meta(names[1])["label"] == 1 and store.meta(names[1])["label_name"] == \
        "air drumming"


def test_a_rawframes_list_read_as_a_video_list_is_read_as_rawframes(sample_videos, tmp_path):
    """`extract --annotations` reads its file as a video list; a rawframes list (`flowkit
    export`'s, mmaction2's: a path without video extension and two integers on every row) used
    to read as videos with two labels each ("9 rows give several labels"), labelling none."""
    lst = tmp_path / "trainlist01_rawframes.txt"
    lst.write_text("pan_left/pan_left_0 8 0\nzoom_in/zoom_in_1 8 1\n")
    entries = read_mmaction_list(lst, kind="videos")
    assert [(e.key, e.total_frames, e.labels) for e in entries] == [
        ("pan_left/pan_left_0", 8, (0,)), ("zoom_in/zoom_in_1", 8, (1,))]
    videos = tmp_path / "videos.txt"  # a video list with two labels a row stays one
    videos.write_text("pan_left/pan_left_0.mp4 8 0\n")
    assert read_mmaction_list(videos, kind="videos")[0].labels == (8, 0)
    result = CliRunner().invoke(main, ["extract", str(sample_videos), "-o", str(tmp_path / "st"),
                                       "--annotations", str(lst), "--plan"])
    assert result.exit_code == 0, result.output
    assert "labels: 2 videos labelled (2 classes)" in result.output
    assert "several labels" not in result.output


def test_class_names_come_from_every_row_not_only_the_matched_ones(tmp_path):
    """A list whose rows of one class match no video (two of four class folders downloaded)
    still names that class from its rows; an id no row names alone is class_<id> (the others
    keep their names), and the report suggests a label map. Every name used to be class_<id>."""
    full = tmp_path / "kinetics400_train_list_videos.txt"
    full.write_text("abseiling/a.mp4 0\nair_drumming/b.mp4 1\ndancing_tap/d.mp4 2\n"
                    "passing/c.mp4 3\n")
    subset = match_annotations(full, ["abseiling/a", "passing/c"], kind="videos")
    assert subset.classes == ["abseiling", "air_drumming", "dancing_tap", "passing"]
    assert subset.labels == {"abseiling/a": (0, "abseiling"), "passing/c": (3, "passing")}
    assert not any("no class name" in line for line in subset.report())
    partial = tmp_path / "val_partial.txt"  # no row of label 2
    partial.write_text("abseiling/a.mp4 0\nair_drumming/b.mp4 1\npassing/c.mp4 3\n")
    match = match_annotations(partial, ["abseiling/a", "air_drumming/b", "passing/c"],
                              kind="videos")
    assert match.classes == ["abseiling", "air_drumming", "class_2", "passing"]
    assert match.report()[-1] == ("1 label ids have no class name (no class folder of the list "
                                  "names them), called class_2: the dataset's label map "
                                  "(--label-map) names them in a new store (pass it on the run "
                                  "that makes the store, or rerun into -o NEW_STORE with it)")
    # `import rawframes` merges its lists' names the same way: the rows name what no key does
    assert merge_class_names([("val", {"abseiling/a": 0, "passing/c": 3})],
                             [("val", {"abseiling/a": 0, "air_drumming/b": 1,
                                       "passing/c": 3})]) == \
        ["abseiling", "air_drumming", "class_2", "passing"]


def test_a_rerun_naming_the_stores_stand_ins_says_the_store_keeps_them():
    """A label map on a rerun into a store that calls ids class_<i> changes nothing there (the
    store keeps its names): a note says so and names the way to the names, a new store. The
    report's note used to send the user to that rerun."""
    stored = ["abseiling", "class_1", "class_2"]
    assert stand_in_note(stored, ["abseiling", "air drumming", "class_2"]) == [
        "1 label id the store calls class_<id> is named by this run (e.g. class_1: 'air "
        "drumming'), but the store keeps the class names it was made with: to have the names, "
        "extract into a new store (-o NEW_STORE) with this --label-map"]
    assert stand_in_note(stored, stored) == [] and stand_in_note(stored, None) == []
    assert stand_in_note(stored, ["abseiling"]) == []  # a run of fewer classes names none


def test_something_something_json_label_map_is_read_by_its_ids(tmp_path):
    """SSv2's something-something-v2-labels.json ({name: "id"}, not in id order) names label i
    by its id, pretty-printed or on one line; it used to be read a line a name ('{' became
    class 0, every id shifted by one) or, on one line, as one class."""
    ssv2 = {"Moving [something] down": "0", "Pushing [something] from left to right": "2",
            "Moving [something] up": 1}
    names = ["Moving [something] down", "Moving [something] up",
             "Pushing [something] from left to right"]
    path = tmp_path / "something-something-v2-labels.json"
    for text in (json.dumps(ssv2, indent=1), json.dumps(ssv2)):
        path.write_text(text)
        assert read_label_map(path) == names
    lst = tmp_path / "sthv2_train_list_videos.txt"
    lst.write_text("1.webm 2\n4.webm 1\n")
    match = match_annotations(lst, ["1", "4"], kind="videos", label_map=path)
    assert match.labels == {"1": (2, names[2]), "4": (1, names[1])}
    path.write_text('["jump", "run"]')  # a list of names: item i is label i
    assert read_label_map(path) == ["jump", "run"]
    # Something-Something's names as text (the label_map.txt flowkit export writes): the lines
    # opening with "[" are names, first or not, as they were before JSON maps were read
    names = ["[Something] falling like a rock", "Approaching [something] with your camera"]
    for order in (names, names[::-1]):
        path.write_text("".join(f"{n}\n" for n in order))
        assert read_label_map(path) == order


@pytest.mark.parametrize("text, message", [
    ('{"a": "0", "b": "2"}', r"ids must run 0..1, each once; 1 are missing \(e.g. 1\)"),
    ('{"a": "0", "b": 0}', r"id 0 is given to both 'a' and 'b'"),
    ('{"a": "0", "a": "1"}', r"class name 'a' appears twice"),
    ('{"a": "zero"}', r"'a': 'zero' is no class name and id"),
    ('[["back", "15som"], ["front", "25som"]]', r"JSON of another form than a label map's \(it "
                                                r"starts '\[\[\"back\""),
    ('{"a": "0",', r"opens like JSON but does not parse"),
    ('jump\n{"run": "1"}\n', r"labels.json:2: '\{\"run\": \"1\"\}' opens like JSON, not a class"),
])
def test_json_label_maps_of_other_forms_are_refused(tmp_path, text, message):
    """Ids that are not 0..N-1 each once, Diving48's vocabulary (a list of lists), broken JSON
    and a text line opening like JSON are refused, not read as class names."""
    path = tmp_path / "labels.json"
    path.write_text(text)
    with pytest.raises(FlowkitError, match=message):
        read_label_map(path)


def test_rows_giving_one_video_two_labels_label_nothing_and_are_reported(tmp_path):
    """Epic-Kitchens' segments of one video, as a Kinetics CSV matched to the whole video or as a
    list, gave it the last row's label silently; such a video now labels nothing (as a
    multi-label row) and the report says so on one line (how many, the video, two labels, the
    fix: the CSV's as segments to cut into clips), so a few of them in a 650k-row CSV do not
    stop a run. The same label twice is fine, a video's clips take their own rows, and a
    multi-label row still labels nothing."""
    csv_file = tmp_path / "segments.csv"
    csv_file.write_text("label,youtube_id,time_start,time_end,split\npush left,P01_01,0,2,train\n"
                        "push right,P01_01,2,4,train\nlift,P02_03,0,2,train\n"
                        "push left,P02_03,2,4,train\nlift,P03_01,0,2,train\n")
    match = match_annotations(csv_file, ["P01_01", "P02_03", "P03_01"])
    assert match.labels == {"P03_01": (0, "lift")}
    assert sorted(match.conflicting) == ["P01_01", "P02_03"] == match.unlabelled
    assert "2 videos are given different labels by their rows and label nothing, e.g. P01_01: " \
        "label 'push left' (line 2) and 'push right' (line 3); its rows are segments of one " \
        "video (P01_01 0-2 s and 2-4 s): flowkit labels whole videos; cut the segments into " \
        "clips named <youtube_id>_<start>_<end> first (e.g. P01_01_000000_000002.mp4)" \
        in match.report()
    assert not [line for line in match.report() if "videos have no label" in line]
    clips = ["P01_01_000000_000002", "P01_01_000002_000004"]
    assert match_annotations(csv_file, clips).labels == {clips[0]: (1, "push left"),
                                                         clips[1]: (2, "push right")}
    lst = tmp_path / "dup_list.txt"
    lst.write_text("P01_01.mp4 0\nP01_01.mp4 0\nP02_03.mp4 0\nP01_01.mp4 1\n")
    match = match_annotations(lst, ["P01_01", "P02_03"], kind="videos")
    assert match.labels == {"P02_03": (0, "class_0")} and list(match.conflicting) == ["P01_01"]
    assert match.conflicting["P01_01"].startswith("label 0 (line 1) and 1 (line 4); flowkit "
                                                  "trains one label a video")
    lst.write_text("a/P01_01.mp4 0\na/P01_01.mp4 0\nb/x.mp4 1 2\nb/x.mp4 1 3\n")
    match = match_annotations(lst, ["a/P01_01", "b/x"], kind="videos")
    assert match.labels == {"a/P01_01": (0, "a")} and len(match.multi_label) == 2


def test_a_json_file_given_for_a_list_is_refused_as_json(tmp_path):
    """Diving48's JSON given to --annotations is said to be JSON, with the list line to convert
    it to, not echoed whole (a 1.2 MB line; Something-Something's is 20 MB)."""
    path = tmp_path / "div.json"
    path.write_text(json.dumps([{"vid_name": f"v{i:05d}", "label": i % 48, "start_frame": 0,
                                 "end_frame": 40} for i in range(2000)]))
    with pytest.raises(FlowkitError) as err:
        match_annotations(path, ["v00000"], kind="videos")
    assert str(err.value) == (f"{path} looks like a JSON file; expected an mmaction2 video list, "
                              "one 'path label' line a video: convert it to such lines (e.g. "
                              "'jump/j0.mp4 0')")
    path.write_text("a/x " + "y" * 5000 + "\n")  # not JSON: the line, cut
    with pytest.raises(FlowkitError, match=r"div.json:1: expected 'frame_dir total_frames "
                                           r"label' .*, got 'a/x y{76}\.\.\.'$"):
        read_mmaction_list(path)


def test_a_class_name_goes_to_one_id_and_the_keys_name_first(tmp_path):
    """A folder the matched keys give one id does not name another id from the rows (``run``
    twice), and a row's folder does not rename an id a key names (``jog`` for ``run``)."""
    lst = tmp_path / "list.txt"
    lst.write_text("jog/r0.mp4 1\nrun/z.mp4 3\nwalk/w.mp4 0\n")
    match = match_annotations(lst, ["run/r0", "walk/w"], kind="videos")
    assert match.classes == ["walk", "run", "class_2", "class_3"]
    assert match.labels == {"run/r0": (1, "run"), "walk/w": (0, "walk")}


def test_multi_label_rows_neither_add_nor_name_classes(tmp_path):
    """A row with several labels (``b/y.mp4 8 1``) labels nothing and gives no class: the list's
    classes are those of its one-label rows."""
    lst = tmp_path / "list.txt"
    lst.write_text("a/x.mp4 0\nb/y.mp4 8 1\n")
    match = match_annotations(lst, ["a/x", "b/y"], kind="videos")
    assert match.classes == ["a"]
    assert match.labels == {"a/x": (0, "a")}


def test_a_video_list_with_one_extension_less_row_is_still_a_video_list(tmp_path):
    """Only a list whose every row is ``frame_dir total_frames label`` is rawframes: a video
    list with one such row among video rows stays a video list."""
    lst = tmp_path / "list.txt"
    lst.write_text("a/x.mp4 0\nb/y 8 1\n")
    assert [(e.key, e.labels) for e in read_mmaction_list(lst, kind="videos")] == [
        ("a/x", (0,)), ("b/y", (8, 1))]
    match = match_annotations(lst, ["a/x"], kind="videos")
    assert match.classes == ["a"]


# ----------------------------------------------------------------------------- HMDB51 splits

def write_hmdb51_splits(folder, uses):
    """HMDB51's testTrainMulti_7030_splits layout: ``uses[split][cls]`` = ids of its videos."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, by_class in uses.items():
        for cls, ids in by_class.items():
            (folder / f"{cls}_test_split{split}.txt").write_text(
                "".join(f"{cls}_{i}.mp4 {use} \n" for i, use in enumerate(ids)))
    return folder


def test_hmdb51_split_becomes_lists_that_train_and_evaluate_take(tiny_store, tmp_path):
    """`flowkit split-lists hmdb51` writes trainlist/testlist/classInd that choose the store's
    videos (labels stay the store's: its class order is not the lists' sorted one)."""
    from flowkit.data import split_from_list
    from flowkit.train import TrainConfig
    from flowkit.train.loading import make_split

    uses = {1: {"right": [1, 1, 2, 0], "down": [1, 2, 1, 1], "left": [2, 1, 1, 2]},
            2: {"right": [2, 1, 1, 1], "down": [1, 1, 2, 2], "left": [1, 2, 1, 1]}}
    splits = write_hmdb51_splits(tmp_path / "testTrainMulti_7030_splits", uses)
    (splits / "readme.txt").write_text("not a split file\n")
    out = tmp_path / "lists"
    result = CliRunner().invoke(main, ["split-lists", "hmdb51", str(splits), "--split", "1",
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "7 training and 4 test videos of 3 classes (1 in neither)" in result.output
    assert (out / "classInd.txt").read_text() == "1 down\n2 left\n3 right\n"
    assert (out / "trainlist01.txt").read_text().splitlines()[:2] == [
        "down/down_0.mp4 1", "down/down_2.mp4 1"]
    assert split_from_list(tiny_store, out / "testlist01.txt") == [
        "down/down_1", "left/left_0", "left/left_3", "right/right_2"]
    config = TrainConfig(store=str(tiny_store), model="resnet2d",
                         split_list=str(out / "trainlist01.txt"),
                         val_list=str(out / "testlist01.txt"))
    train, val, _ = make_split(tiny_store, config)
    assert len(train) == 7 and len(val) == 4 and "right/right_3" not in train + val
    # split 2 beside it shares classInd.txt
    lists = read_hmdb51_split(splits, 2)
    assert write_split_lists(out, lists, 2)["train"].name == "trainlist02.txt"
    assert lists.test == ["down/down_2.mp4", "down/down_3.mp4", "left/left_1.mp4",
                          "right/right_0.mp4"]


def test_split_lists_writes_the_split_asked_for(tmp_path):
    """`flowkit split-lists hmdb51 DIR --split 2` lists split 2's videos (each split tests other
    videos): training on split 1's lists under split 2's names would report a wrong protocol."""
    uses = {1: {"a": [1, 2, 1], "b": [2, 1, 1]}, 2: {"a": [2, 1, 1], "b": [1, 1, 2]}}
    splits = write_hmdb51_splits(tmp_path / "splits", uses)
    out = tmp_path / "lists"
    result = CliRunner().invoke(main, ["split-lists", "hmdb51", str(splits), "--split", "2",
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    expected = read_hmdb51_split(splits, 2)
    assert expected.test == ["a/a_0.mp4", "b/b_2.mp4"]
    assert (out / "testlist02.txt").read_text().splitlines() == expected.test
    assert [line.split()[0] for line in (out / "trainlist02.txt").read_text().splitlines()] == \
        expected.train


def test_hmdb51_split_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(FlowkitError, match="holds no '<class>_test_split3.txt'"):
        read_hmdb51_split(write_hmdb51_splits(tmp_path / "a", {1: {"c": [1]}}), 3)
    with pytest.raises(FlowkitError, match="splits 1, 2 and 3"):
        read_hmdb51_split(tmp_path / "a", 4)
    bad = tmp_path / "b"
    bad.mkdir()
    (bad / "c_test_split1.txt").write_text("v_0.avi 1\nv_1.avi 3\n")
    with pytest.raises(FlowkitError, match=r"c_test_split1.txt:2: expected '<video>.avi <0\|1\|2>'"):
        read_hmdb51_split(bad, 1)
    (bad / "c_test_split1.txt").write_text("#12_v.avi 1\n#12_v.avi 2\n")  # HMDB51 names start with #
    with pytest.raises(FlowkitError, match=r"c_test_split1.txt:2: '#12_v.avi' is listed twice"):
        read_hmdb51_split(bad, 1)
    lists = read_hmdb51_split(write_hmdb51_splits(tmp_path / "c", {1: {"c": [1, 2]}}), 1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "classInd.txt").write_text("1 other\n")
    with pytest.raises(FlowkitError, match="exists with other classes"):
        write_split_lists(tmp_path / "out", lists, 1)
