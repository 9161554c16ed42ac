"""Video discovery and labels: class-per-folder trees and UCF101 split lists."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from flowkit import labels
from flowkit.errors import FlowkitError
from flowkit.labels import (VideoItem, parse_split_list, read_class_index, read_split_list,
                            read_split_lists, scan_videos, walk_directories)


def touch(root: Path, *relatives: str) -> None:
    for rel in relatives:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")


def test_scan_folder_layout(tmp_path):
    touch(tmp_path, "zoom/z1.mp4", "pan_left/p0.AVI", "pan_left/sub/p1.mkv", "loose.webm",
          "pan_left/notes.txt", "pan_left/.hidden.mp4", ".cache/x.mp4", "empty_class/readme.md")
    items, classes = scan_videos(tmp_path)
    assert classes == ["pan_left", "zoom"]
    assert items == [
        VideoItem(tmp_path / "loose.webm", "loose", -1, ""),
        VideoItem(tmp_path / "pan_left/p0.AVI", "pan_left/p0", 0, "pan_left"),
        VideoItem(tmp_path / "pan_left/sub/p1.mkv", "pan_left/sub/p1", 0, "pan_left"),
        VideoItem(tmp_path / "zoom/z1.mp4", "zoom/z1", 1, "zoom"),
    ]


def test_scan_finds_camcorder_and_phone_videos(tmp_path):
    """AVCHD (.MTS, .m2ts), broadcast .ts, phones' .3gp/.3g2 and the like decode with PyAV; a
    scan used to leave them out without a word."""
    names = ["cam/c1.MTS", "cam/c2.m2ts", "cam/c3.ts", "cam/p1.3gp", "cam/p2.3g2", "cam/o.ogv",
             "cam/m.mxf", "cam/d.VOB", "cam/v.mp4"]
    touch(tmp_path, *names)
    items, classes = scan_videos(tmp_path)
    assert classes == ["cam"] and len(items) == len(names)


def test_scan_notes_files_of_unknown_extensions_once(tmp_path):
    """Files skipped for an extension that is not a video's are counted in one note with an
    example; annotations, images, hidden files and files without an extension are no news."""
    touch(tmp_path, "a/v.mp4", "a/clip.xyz", "b/clip2.XYZ", "b/clip.cpi", "a/labels.csv",
          "a/notes.txt", "a/thumb.PNG", "a/.DS_Store", "README", "a/ann.json")
    notes: list[str] = []
    items, _ = scan_videos(tmp_path, notes=notes)
    assert [i.key for i in items] == ["a/v"]
    assert notes == [f"skipped 3 files whose extension (.cpi, .xyz) is not read as video, e.g. "
                     f"{tmp_path / 'a/clip.xyz'}; videos are looked for as .mp4, .avi, .mkv, "
                     ".mov, .webm, .m4v, ...: rename such a video with one of these extensions"]
    quiet: list[str] = []
    scan_videos(tmp_path / "a", extensions=[".mp4", ".xyz"], notes=quiet)
    assert quiet == []  # the extensions asked for are read, whatever they are


def test_the_unknown_extensions_note_names_the_extensions_asked_for(tmp_path):
    """A scan given its own extensions (``--extensions .mp4``) that skips a video of another
    (b.dv) says videos were looked for as the ones asked for, not as the default list."""
    touch(tmp_path, "walk/a.mp4", "walk/b.dv")
    notes: list[str] = []
    items, _ = scan_videos(tmp_path, extensions=[".mp4"], notes=notes)
    assert [i.key for i in items] == ["walk/a"]
    assert notes[-1].endswith(f"e.g. {tmp_path / 'walk/b.dv'}; videos are looked for as .mp4: "
                              "rename such a video with one of these extensions")


def test_the_scan_reads_the_extensions_the_decoder_does():
    from flowkit import video

    assert labels.VIDEO_EXTENSIONS == video.VIDEO_EXTENSIONS
    assert not set(labels.VIDEO_EXTENSIONS) & labels.NOT_VIDEO_EXTENSIONS


def test_scan_custom_extensions_and_errors(tmp_path):
    touch(tmp_path, "a/x.mp4", "a/y.gif")
    items, _ = scan_videos(tmp_path, extensions=["GIF"])
    assert [i.key for i in items] == ["a/y"]
    assert scan_videos(tmp_path / "a", extensions=[".mov"]) == ([], [])
    with pytest.raises(FlowkitError, match="does not exist"):
        scan_videos(tmp_path / "missing")
    touch(tmp_path, "a/x.avi")
    with pytest.raises(FlowkitError, match="two videos map to the store key 'a/x'"):
        scan_videos(tmp_path)


@pytest.fixture
def ucf(tmp_path):
    root = tmp_path / "UCF-101"
    touch(root, "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "Archery/v_Archery_g01_c01.avi",
          "ApplyLipstick/v_ApplyLipstick_g01_c01.avi")
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\r\n2 ApplyLipstick\r\n3 Archery\r\n")
    (lists / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n\n"
        "Archery/v_Archery_g01_c01.avi 3\n"
        "Archery/v_Archery_g99_c09.avi 3\n")  # listed, but not on disk
    (lists / "testlist01.txt").write_text("ApplyLipstick/v_ApplyLipstick_g01_c01.avi\n"
                                          "Archery/v_Archery_g01_c01.avi\n")
    return root, lists


def test_ucf101_train_list_with_class_index(ucf):
    root, lists = ucf
    items, classes = read_split_list(lists / "trainlist01.txt", root)
    assert classes == ["ApplyEyeMakeup", "ApplyLipstick", "Archery"]
    assert [(i.key, i.label, i.label_name) for i in items] == [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01", 0, "ApplyEyeMakeup"),
        ("Archery/v_Archery_g01_c01", 2, "Archery"),
        ("Archery/v_Archery_g99_c09", 2, "Archery"),
    ]
    assert items[0].path == root / "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"
    assert not items[2].path.exists()  # missing videos are returned; extraction reports them


def test_ucf101_test_list_takes_labels_from_folders(ucf):
    root, lists = ucf
    items, classes = read_split_list(lists / "testlist01.txt", root,
                                     class_index=lists / "classInd.txt")
    assert [(i.key, i.label, i.label_name) for i in items] == [
        ("ApplyLipstick/v_ApplyLipstick_g01_c01", 1, "ApplyLipstick"),
        ("Archery/v_Archery_g01_c01", 2, "Archery"),
    ]


def test_several_split_lists_give_the_union_of_their_videos(ucf, tmp_path):
    """trainlist01 + testlist01: every video once (Archery_g01 is in both), in list order, labelled
    with the classInd.txt beside them; lists beside two different class indexes are refused."""
    root, lists = ucf
    items, classes = read_split_lists([lists / "trainlist01.txt", lists / "testlist01.txt"], root)
    assert classes == ["ApplyEyeMakeup", "ApplyLipstick", "Archery"]
    assert [(i.key, i.label) for i in items] == [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01", 0), ("Archery/v_Archery_g01_c01", 2),
        ("Archery/v_Archery_g99_c09", 2), ("ApplyLipstick/v_ApplyLipstick_g01_c01", 1)]
    other = tmp_path / "other"
    other.mkdir()
    (other / "classInd.txt").write_text("1 Archery\n2 ApplyLipstick\n3 ApplyEyeMakeup\n")
    (other / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n")
    with pytest.raises(FlowkitError, match="beside different class indexes.*--class-index"):
        read_split_lists([lists / "trainlist01.txt", other / "testlist01.txt"], root)
    (other / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.mp4\n")  # .avi in the other
    with pytest.raises(FlowkitError, match="'Archery/v_Archery_g01_c01' is .*fix one of the lists"):
        read_split_lists([lists / "trainlist01.txt", other / "testlist01.txt"], root,
                         class_index=lists / "classInd.txt")


def test_split_list_without_class_index_uses_sorted_folders(ucf):
    root, lists = ucf
    (lists / "classInd.txt").unlink()
    (root / "Basketball").mkdir()
    items, classes = read_split_list(lists / "testlist01.txt", root)
    assert classes == ["ApplyEyeMakeup", "ApplyLipstick", "Archery", "Basketball"]
    assert [i.label for i in items] == [1, 2]


def test_split_list_classes_leave_out_hidden_folders(ucf):
    """Without classInd.txt the classes are the root's folders, but not hidden ones a tool left
    there (.ipynb_checkpoints): it would become a class and shift every label after it."""
    root, lists = ucf
    (lists / "classInd.txt").unlink()
    (root / ".ipynb_checkpoints").mkdir()
    items, classes = read_split_list(lists / "testlist01.txt", root)
    assert classes == ["ApplyEyeMakeup", "ApplyLipstick", "Archery"]
    assert [i.label for i in items] == [1, 2]


@pytest.mark.parametrize("line, message", [
    ("ApplyEyeMakeup/v_a.avi 1 extra", r"trainlist01.txt:2: expected '<class>/<video> \[label\]'"),
    ("ApplyEyeMakeup/v_a.avi one", r"trainlist01.txt:2: label 'one' is not a 1-based class id"),
    # one space: two fields, but one path, not a path and a label
    ("ApplyEyeMakeup/my clip.avi", r"trainlist01.txt:2: .*paths with spaces are not supported"),
    ("ApplyEyeMakeup/my.take 2.avi", r"trainlist01.txt:2: .*paths with spaces are not supported"),
    # a label 0 makes the list mmaction2's (0-based): line 1's 3 is then beyond the classes
    ("ApplyEyeMakeup/v_a.avi 0", r"trainlist01.txt:1: label 3 \(0-based\) is out of range 0..2 "
                                 r"\(a list with a label 0 .* is read as mmaction2's"),
    ("ApplyEyeMakeup/v_a.avi 4", r"trainlist01.txt:2: label 4 is out of range 1..3"),
    ("ApplyEyeMakeup/v_a.avi 3", r"trainlist01.txt:2: label 3 is class 'Archery' but the video is "
                                 r"in folder 'ApplyEyeMakeup'"),
    ("Juggling/v_a.avi", r"trainlist01.txt:2: class folder 'Juggling' is not among the 3"),
    ("ApplyEyeMakeup/v_a", r"trainlist01.txt:2: 'ApplyEyeMakeup/v_a' is not a relative video path"),
    ("../outside/v_a.avi", r"trainlist01.txt:2: '../outside/v_a.avi' is not a relative video path"),
    ("Archery/v_Archery_g01_c01.avi 3", r"two videos map to the store key"),
])
def test_malformed_split_line(ucf, line, message):
    root, lists = ucf
    (lists / "trainlist01.txt").write_text(f"Archery/v_Archery_g01_c01.avi 3\n{line}\n")
    with pytest.raises(FlowkitError, match=message):
        read_split_list(lists / "trainlist01.txt", root)


def test_class_index_errors(tmp_path):
    bad = tmp_path / "classInd.txt"
    bad.write_text("1 A\n3 C\n")
    with pytest.raises(FlowkitError, match="without gaps"):
        read_class_index(bad)
    bad.write_text("1 A\nB\n")
    with pytest.raises(FlowkitError, match=r"classInd.txt:2: expected '<id> <ClassName>'"):
        read_class_index(bad)
    bad.write_text("1 A\n2 B\n3 A\n")  # two ids for one class: which one its videos get is unclear
    with pytest.raises(FlowkitError, match="classInd.txt: a class name appears twice"):
        read_class_index(bad)
    with pytest.raises(FlowkitError, match="does not exist"):
        read_split_list(tmp_path / "nolist.txt", tmp_path)


def test_parse_split_list_entries(tmp_path):
    lst = tmp_path / "trainlist01.txt"
    lst.write_text("\ufeff# header\nPan/v_Pan_g01_c01.avi 2\n\nZoom\\v_Zoom_g02_c01.mp4\nloose.mp4 1\n")
    entries = parse_split_list(lst)
    assert [(e.lineno, e.key, e.class_folder, e.label) for e in entries] == [
        (2, "Pan/v_Pan_g01_c01", "Pan", 2), (4, "Zoom/v_Zoom_g02_c01", "Zoom", None),
        (5, "loose", "", 1)]
    lst.write_text("Pan/a.avi 1\nPan/b.avi zero\n")
    with pytest.raises(FlowkitError, match=r"trainlist01.txt:2: label 'zero'"):
        parse_split_list(lst)
    with pytest.raises(FlowkitError, match="does not exist"):
        parse_split_list(tmp_path / "missing.txt")
    with pytest.raises(FlowkitError, match=r"split list .* is a directory; give the list file"):
        parse_split_list(tmp_path)


def test_walk_directories_enters_each_real_directory_once(tmp_path):
    """The walk `scan_videos` and the rawframes import share: links followed, a loop or a second
    link to a directory skipped with a note, hidden entries left out, names sorted."""
    touch(tmp_path, "b/v.mp4", "a/x/.hidden", "a/x/f2", "a/x/f1", ".cache/y.mp4")
    os.symlink("..", tmp_path / "a" / "x" / "up")
    os.symlink("../b", tmp_path / "a" / "z")
    notes: list[str] = []
    walked = [(d.relative_to(tmp_path).as_posix(), list(ds), fs)
              for d, ds, fs in walk_directories(tmp_path, notes)]
    assert walked == [(".", ["a", "b"], []), ("a", ["x"], []), ("a/x", [], ["f1", "f2"]),
                      ("b", [], ["v.mp4"])]
    assert len(notes) == 2 and "a/z: skipped, the same directory as" in notes[0]
    assert "a/x/up: skipped, the same directory as" in notes[1]


def test_mmaction2_lists_are_split_lists(tiny_store, tmp_path):
    """`train` / `evaluate --split-list` take mmaction2's lists (what `flowkit export` writes):
    rawframes `frame_dir total_frames label` and videos `path label`, 0-based. A rawframes line
    used to read as a path with spaces."""
    from flowkit.data.splits import split_from_list

    rawframes = tmp_path / "trainlist01_rawframes.txt"
    rawframes.write_text("right/right_0 10 2\ndown/down_1 10 0\n")
    entries = parse_split_list(rawframes)
    assert [(e.key, e.label, e.frame_dir, e.written) for e in entries] == [
        ("right/right_0", 3, True, "2 (0-based)"), ("down/down_1", 1, True, "0 (0-based)")]
    assert split_from_list(tiny_store, rawframes) == ["right/right_0", "down/down_1"]
    videos = tmp_path / "val_list_videos.txt"
    videos.write_text("right/right_2.mp4 0\nleft/left_1.mp4 1\n")
    assert [e.label for e in parse_split_list(videos)] == [1, 2]
    assert split_from_list(tiny_store, videos) == ["right/right_2", "left/left_1"]
    dotted = tmp_path / "dotted.txt"  # a frame folder keeps a dot in its name, as read_keys does
    dotted.write_text("jump/v.take_2 8 1\n")
    assert [e.key for e in parse_split_list(dotted)] == ["jump/v.take_2"]
    rawframes.write_text("right/right_0 10 2\ndown/down_1 10 2\n")  # messages say what it wrote
    with pytest.raises(FlowkitError, match=r"rawframes.txt:2: label 2 \(0-based\) is given to "
                                           r"folder 'down'"):
        split_from_list(tiny_store, rawframes)


def test_extract_split_list_from_an_mmaction2_rawframes_list(tmp_path):
    """`extract --split-list` with a rawframes list finds each frame folder's video by name."""
    touch(tmp_path, "pan/p0.avi", "zoom/z1.mp4")
    lst = tmp_path / "all_rawframes.txt"
    lst.write_text("pan/p0 8 0\nzoom/z1 8 1\n")
    items, classes = read_split_list(lst, tmp_path)
    assert classes == ["pan", "zoom"]
    assert items == [VideoItem(tmp_path / "pan/p0.avi", "pan/p0", 0, "pan"),
                     VideoItem(tmp_path / "zoom/z1.mp4", "zoom/z1", 1, "zoom")]


def test_a_0_based_list_of_a_class_subset_reads_0_based(tmp_path):
    """An mmaction2 video list of some classes has no label 0: its labels name their class
    folders only read 0-based, which the classes (folders or classInd.txt) tell, so it reads so.
    Before: read 1-based ("label 2 is class 'pan_right' but the video is in folder 'rotate_cw'").
    A list whose lines fit no base says when a line would fit 0-based."""
    root = tmp_path / "vids"
    touch(root, "pan_left/a.mp4", "pan_right/b.mp4", "rotate_cw/c.mp4", "zoom_in/d.mp4")
    lst = tmp_path / "val_list_videos.txt"
    lst.write_text("rotate_cw/c.mp4 2\nzoom_in/d.mp4 3\n")
    items, classes = read_split_list(lst, root)
    assert [(i.key, i.label, i.label_name) for i in items] == [("rotate_cw/c", 2, "rotate_cw"),
                                                               ("zoom_in/d", 3, "zoom_in")]
    assert [e.written for e in parse_split_list(lst, classes)] == ["2 (0-based)", "3 (0-based)"]
    (tmp_path / "classInd.txt").write_text("1 pan_left\n2 pan_right\n3 rotate_cw\n4 zoom_in\n")
    assert read_split_list(lst, root)[0] == items
    lst.write_text("rotate_cw/c.mp4 3\nzoom_in/d.mp4 4\n")  # UCF101's ids: 1-based, as before
    assert read_split_list(lst, root)[0] == items
    lst.write_text("rotate_cw/c.mp4 2\nzoom_in/d.mp4 4\n")  # line 1 0-based, line 2 1-based
    with pytest.raises(FlowkitError, match=r"val_list_videos.txt:1: label 2 is class 'pan_right' "
                                           r"but the video is in folder 'rotate_cw' \(read "
                                           r"0-based, as mmaction2 writes labels, it would be "
                                           r"'rotate_cw', but then other lines would not"):
        read_split_list(lst, root)
    # paths without class folders: the numbers alone do not tell; no label 0 reads 1-based
    lst.write_text("c.mp4 3\nd.mp4 4\n")
    assert [(i.key, i.label_name) for i in read_split_list(lst, root)[0]] == [
        ("c", "rotate_cw"), ("d", "zoom_in")]


def test_a_video_line_with_several_labels_is_no_rawframes_line(tmp_path):
    """A multi-label video line (``path label label``) is refused as one, not read as a rawframes
    line ``frame_dir total_frames label`` (total_frames 1, label 3), as it was."""
    lst = tmp_path / "multi.txt"
    lst.write_text("pan_left/pan_left_0.mp4 1 3\nzoom_in/zoom_in_0.mp4 2 3\n")
    with pytest.raises(FlowkitError, match=r"multi.txt:1: expected '<class>/<video> \[label\]', "
                                           r"got 'pan_left/pan_left_0.mp4 1 3': a video with "
                                           r"several labels"):
        parse_split_list(lst)
    lst.write_text("pan_left/pan_left_0 8 0\npan_left/pan_left_1.mp4 1 3\n")  # with rawframes
    with pytest.raises(FlowkitError, match=r"multi.txt:2: expected '<class>/<video> \[label\]'"):
        parse_split_list(lst)


def test_a_negative_rawframes_label_is_refused(tmp_path):
    """A rawframes line with label -1 is refused, not read as the last class."""
    (tmp_path / "classInd.txt").write_text("1 A\n2 B\n3 C\n")
    lst = tmp_path / "list.txt"
    lst.write_text("A/a 30 0\nv 30 -1\n")
    with pytest.raises(FlowkitError, match=r"list.txt:2: label -1 is not a 0-based class id"):
        read_split_list(lst, tmp_path, tmp_path / "classInd.txt")


def test_a_multi_label_rawframes_line_gives_no_label(tmp_path):
    """A rawframes line with several labels (``frame_dir total_frames l1 l2``) does not take its
    last number as label: flat it has none, in a class folder the folder labels it."""
    (tmp_path / "classInd.txt").write_text("1 A\n2 B\n3 C\n")
    lst = tmp_path / "list.txt"
    lst.write_text("A/a 30 0\nv 30 0 2\nB/b 30 0 2\n")
    items, _ = read_split_list(lst, tmp_path, tmp_path / "classInd.txt")
    assert [(i.key, i.label, i.label_name) for i in items] == [
        ("A/a", 0, "A"), ("v", -1, ""), ("B/b", 1, "B")]


def test_a_rawframes_line_finds_an_upper_case_extension(tmp_path):
    """A rawframes line ``A/v 30 0`` finds the video ``A/v.AVI``."""
    touch(tmp_path, "A/v.AVI")
    (tmp_path / "classInd.txt").write_text("1 A\n")
    lst = tmp_path / "list.txt"
    lst.write_text("A/v 30 0\n")
    items, _ = read_split_list(lst, tmp_path, tmp_path / "classInd.txt")
    assert [(i.key, i.path) for i in items] == [("A/v", tmp_path / "A/v.AVI")]


def test_a_label_0_in_the_last_class_folder_reads_0_based(tmp_path):
    """``C/c.mp4 0`` (classes A, B, C) fits no base; the message says label 0 is class 'A',
    not that 0 is no 1-based id (as if -1 named the last class)."""
    touch(tmp_path, "A/a.mp4", "C/c.mp4")
    (tmp_path / "classInd.txt").write_text("1 A\n2 B\n3 C\n")
    lst = tmp_path / "list.txt"
    lst.write_text("C/c.mp4 0\n")
    with pytest.raises(FlowkitError, match=r"list.txt:1: label 0 \(0-based\) is class 'A' but "
                                           r"the video is in folder 'C'"):
        read_split_list(lst, tmp_path, tmp_path / "classInd.txt")


@pytest.mark.parametrize("text", [
    '[{"vid_name": "Zx9-Yw8_Vu7_00003", "label": 45, "start_frame": 0, "end_frame": 8}, '
    '{"vid_name": "Zx9-Yw8_Vu7_00004", "label": 12, "start_frame": 0, "end_frame": 8}]',
    '[\n {\n  "id": "1",\n  "label": "moving a pen down"\n }\n]\n',  # SSv2's, pretty-printed
])
def test_a_json_split_list_is_refused_as_json(tmp_path, text):
    """Diving48_V2_test.json given to --split-list is said to be JSON, with the line to convert it
    to: not echoed whole (1.2 MB) with advice about paths with spaces."""
    lst = tmp_path / "Diving48_V2_test.json"
    lst.write_text(text)
    with pytest.raises(FlowkitError) as err:
        read_split_list(lst, tmp_path)
    assert str(err.value) == (f"{lst} looks like a JSON file; expected a split list, one "
                              "'<class>/<video> [label]' line a video: convert it to such lines "
                              "(e.g. 'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1')")


def test_a_long_malformed_line_is_echoed_cut(tmp_path):
    """A malformed split-list or classInd.txt line is echoed to 80 characters and "...", not
    whole; a JSON classInd.txt is said to be JSON."""
    lst = tmp_path / "trainlist01.txt"
    lst.write_text("A/a.avi 1 " + " ".join(["x"] * 3000) + "\n")
    with pytest.raises(FlowkitError, match=r"trainlist01.txt:1: expected '<class>/<video> "
                                           r"\[label\]' .*, got 'A/a.avi 1 (x ){35}\.\.\.' "
                                           r"\(paths with spaces"):
        parse_split_list(lst)
    index = tmp_path / "classInd.txt"
    index.write_text('{"ApplyEyeMakeup": 1, "Archery": 2}\n')
    with pytest.raises(FlowkitError, match=r"classInd.txt looks like a JSON file; expected "
                                           r"UCF101's classInd.txt, one '<id> <ClassName>' line "
                                           r"a class, ids from 1: convert it to such lines "
                                           r"\(e.g. '1 ApplyEyeMakeup'\)"):
        read_class_index(index)
    index.write_text("1 A\n2 " + "B " * 1000 + "\n")
    with pytest.raises(FlowkitError, match=r"classInd.txt:2: expected '<id> <ClassName>' with a "
                                           r"1-based id, got '2 (B ){39}\.\.\.'$"):
        read_class_index(index)
