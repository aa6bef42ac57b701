"""`ifrvis predict` on video files as cameras and editors write them: odd sizes, rotation tags, variable
frame rates, truncated files. Each test writes its own small video with PyAV."""

import json
import re
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from test_predict import CHECKPOINT, CONFIG, SMALL, decode, predict_cli, synthetic_frames

from ifrvis.video_io import VideoWriter


def encode(
    path: Path, frames: np.ndarray, codec: str = "libx264", pix_fmt: str = "yuv420p", **kwargs
) -> Path:
    """Write (T, H, W, 3) uint8 frames at 12 frames/s; `kwargs`: the container's options."""
    with av.open(str(path), "w", options=kwargs) as container:
        stream = container.add_stream(codec, rate=12)
        stream.height, stream.width, stream.pix_fmt = *frames.shape[1:3], pix_fmt
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_odd_sizes_are_kept(tmp_path, capsys):
    """An H.264 video of 63 x 95 px (4:4:4: its 4:2:0 needs even sides) and an MPEG-4 one: results,
    overlay and all stay at 63 x 95, not padded to 64 x 96."""
    frames = synthetic_frames(6)[:, :63, :95]
    inputs = [
        encode(tmp_path / "h264.mp4", frames, pix_fmt="yuv444p"),
        encode(tmp_path / "mpeg4.avi", frames, "mpeg4"),
    ]
    out = tmp_path / "out"
    argv = [
        str(CONFIG),
        str(CHECKPOINT),
        *map(str, inputs),
        "--out",
        str(out),
        "--score-threshold",
        "0",
        *SMALL,
    ]
    code, _, err = predict_cli(argv, capsys)
    assert code == 0, err
    for name, suffix, codec in (("h264", ".mp4", "h264"), ("mpeg4", ".avi", "mpeg4")):
        results = json.loads((out / name / "results.json").read_text())
        assert results and all(
            s is None or s["size"] == [63, 95] for r in results for s in r["segmentations"]
        )
        overlay, _, written = decode(out / name / f"overlay{suffix}")
        assert (len(overlay), overlay[0].shape, written) == (6, (63, 95, 3), codec)


def tag_rotation(path: Path, height: int) -> Path:
    """Write into `path`'s track header (tkhd, version 0) the matrix a phone writes for a portrait
    video stored landscape (rotate=90: shown turned a quarter clockwise), as the QuickTime format says:
    (x, y) -> (height - y, x)."""
    data = bytearray(path.read_bytes())
    header = data.index(b"tkhd")
    assert data[header + 4] == 0  # version 0: the matrix is 44 bytes after the box's type
    matrix = header + 44
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, height << 16, 0, 1 << 30)
    path.write_bytes(data)
    return path


def test_a_rotation_tag_turns_the_frames_as_players_show_them(tmp_path, capsys):
    """A 64 x 96 video tagged to show as 96 x 64 (portrait): the results and the overlay are 96 x 64, the
    overlay's frames the stored ones turned a quarter clockwise."""
    stored = synthetic_frames(6)
    video = tag_rotation(encode(tmp_path / "phone.mp4", stored, pix_fmt="yuv444p"), 64)
    out = tmp_path / "out"
    for threshold, name in (("0", "all"), ("1.1", "none")):  # every track; no track drawn over the frames
        argv = [
            str(CONFIG),
            str(CHECKPOINT),
            str(video),
            "--out",
            str(out / name),
            "--score-threshold",
            threshold,
        ]
        code, _, err = predict_cli([*argv, *SMALL], capsys)
        assert code == 0, err
    results = json.loads((out / "all" / "phone" / "results.json").read_text())
    assert results and all(s is None or s["size"] == [96, 64] for r in results for s in r["segmentations"])
    overlay, _, _ = decode(out / "none" / "phone" / "overlay.mp4")
    assert [frame.shape for frame in overlay] == [(96, 64, 3)] * 6
    clockwise, counterclockwise = (
        np.abs(np.stack(overlay).astype(int) - np.rot90(stored, turns, axes=(1, 2))).mean()
        for turns in (-1, 1)
    )
    assert clockwise < 20 and counterclockwise > 3 * clockwise  # H.264 twice: about 13 and 73 grey levels


def decodable_frames(path: Path) -> int:
    """How many frames FFmpeg decodes from `path` before its first error."""
    count = 0
    try:
        with av.open(str(path)) as container:
            for _ in container.decode(video=0):
                count += 1
    except av.FFmpegError:
        pass
    return count


def test_a_truncated_video_keeps_the_frames_before_the_cut(tmp_path, capsys):
    """An mp4 with its index at the start (faststart), cut at 60 % of its bytes: the index declares 30
    frames, the file holds fewer, the last of them cut. The command keeps every frame it can decode (at
    least those before the first error), warns in one line that the file ends early, and exits 0; a
    batch's table says "damaged"."""
    whole = encode(tmp_path / "whole.mp4", synthetic_frames(30), movflags="faststart")
    data = whole.read_bytes()
    assert data[4:8] == b"ftyp" and data.index(b"moov") < data.index(b"mdat")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])
    with av.open(str(cut)) as container:
        assert container.streams.video[0].frames == 30
    assert 0 < decodable_frames(cut) < 30
    out = tmp_path / "out"
    argv = [str(CONFIG), str(CHECKPOINT), str(cut), str(whole), "--out", str(out), "--score-threshold", "0"]
    code, stdout, err = predict_cli([*argv, *SMALL], capsys)
    assert code == 0, err
    warning = re.fullmatch(
        rf"ifrvis predict: warning: {re.escape(str(cut))}: .*the file ends after \d+ of the 30 frames it "
        r"declares \(cut short\?\): frames 0-(\d+) kept\n",
        err,
    )
    assert warning, err
    kept = int(warning[1]) + 1
    assert decodable_frames(cut) <= kept < 30
    results = json.loads((out / "cut" / "results.json").read_text())
    assert results and all(len(r["segmentations"]) == kept for r in results)
    overlay, _, _ = decode(out / "cut" / "overlay.mp4")
    assert len(overlay) == kept
    assert [row.split()[1:3] for row in stdout.splitlines()[-2:]] == [["damaged", str(kept)], ["ok", "30"]]


def corrupt_packets(path: Path, packets: range) -> list[float]:
    """Overwrite with garbage the bytes of the video packets `packets` (in file order), their length
    fields included, as a bad sector or a broken download does -> their times in seconds."""
    data, times = bytearray(path.read_bytes()), []
    with av.open(str(path)) as container:
        for n, packet in enumerate(p for p in container.demux(video=0) if p.size):
            if n in packets:
                data[packet.pos : packet.pos + packet.size] = b"\xff" * packet.size
                times.append(float(packet.pts * packet.time_base))
    path.write_bytes(data)
    return times


def test_a_damaged_region_midway_skips_its_packets_and_keeps_the_rest(tmp_path, capsys):
    """Three packets of a 30-frame mp4 overwritten with garbage after frame 10: FFmpeg refuses them, and
    used to end the video there (10 frames kept, exit 0). The packets are skipped, the 27 other frames
    predicted and drawn, and one warning line says how many were skipped and when."""
    video = encode(tmp_path / "damaged.mp4", synthetic_frames(30))
    times = corrupt_packets(video, range(10, 13))
    assert decodable_frames(video) < 15
    out = tmp_path / "out"
    code, _, err = predict_cli([str(CONFIG), str(CHECKPOINT), str(video), "--out", str(out), *SMALL], capsys)
    assert code == 0, err
    where = f"{min(times):.2f}-{max(times):.2f} s"
    assert err == (
        f"ifrvis predict: warning: {video}: 3 undecodable packets skipped at {where} "
        "(Invalid data found when processing input): frames 0-26 kept\n"
    )
    results = json.loads((out / "damaged" / "results.json").read_text())
    assert all(len(r["segmentations"]) == 27 for r in results)
    overlay, _, _ = decode(out / "damaged" / "overlay.mp4")
    assert len(overlay) == 27


def test_a_variable_frame_rate_keeps_each_frame_at_its_time(tmp_path, capsys):
    """A phone's variable frame rate: 12 frames at irregular times (ms). The overlay shows each at its
    time in the input (re-timed at the average rate, 120/17 frames/s, frame 7 would come at 0.99 s, not
    1.5 s)."""
    milliseconds = [0, 40, 80, 120, 500, 540, 580, 1500, 1540, 1580, 1620, 2400]
    video = tmp_path / "vfr.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width, stream.pix_fmt = 64, 96, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for time, frame in zip(milliseconds, synthetic_frames(12)):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts, picture.time_base = time, Fraction(1, 1000)
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
    assert frame_times(video) == milliseconds
    out = tmp_path / "out"
    code, _, err = predict_cli([str(CONFIG), str(CHECKPOINT), str(video), "--out", str(out), *SMALL], capsys)
    assert code == 0, err
    assert frame_times(out / "vfr" / "overlay.mp4") == milliseconds


def frame_times(path: Path) -> list[int]:
    """Each frame's presentation time in milliseconds, as a player shows it."""
    with av.open(str(path)) as container:
        return [round(frame.time * 1000) for frame in container.decode(video=0)]


def test_the_overlay_is_encoded_for_speed(tmp_path):
    """x264 writes its settings into the stream: the veryfast preset's subpixel refinement (subme=2,
    medium's is 7) and one reference frame (medium: 3)."""
    frames = synthetic_frames(4)
    with VideoWriter(tmp_path / "overlay.mp4", "libx264", 12, frames.shape[1:3], Fraction(1, 12)) as writer:
        for t, frame in enumerate(frames):
            writer.write(frame, t)
    data = (tmp_path / "overlay.mp4").read_bytes()
    assert b" subme=2 " in data and b" ref=1 " in data


def with_sound(path: Path, frames: np.ndarray, seconds: float) -> Path:
    """An mp4 of `frames` at 12 frames/s and an AAC tone of `seconds`, as a camera records."""
    rate = 48000
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=12)
        video.height, video.width, video.pix_fmt = *frames.shape[1:3], "yuv420p"
        audio = container.add_stream("aac", rate=rate)
        audio.layout = "mono"
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            samples = av.AudioFrame.from_ndarray(
                tone[None, start : start + 1024], format="fltp", layout="mono"
            )
            samples.sample_rate, samples.pts = rate, start
            container.mux(audio.encode(samples))
        container.mux(audio.encode())
        container.mux(video.encode())
    return path


def audio_packets(path: Path) -> list[tuple[int, bytes]]:
    """(time in ms, bytes) of each audio packet of `path`; [] without sound."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return []
        stream = container.streams.audio[0]
        return [
            (round(p.pts * p.time_base * 1000), bytes(p))
            for p in container.demux(stream)
            if p.pts is not None
        ]


def test_the_overlay_keeps_the_sound(tmp_path, capsys):
    """The input's AAC copied packet for packet (not re-encoded) beside the overlay's video; not when
    --stride keeps some frames only (the sound would no longer match them)."""
    video = with_sound(tmp_path / "talk.mp4", synthetic_frames(12), 1.0)
    sound = audio_packets(video)
    assert len(sound) > 40
    out = tmp_path / "out"
    for name, options in (("all", []), ("strided", ["--stride", "2"])):
        argv = [str(CONFIG), str(CHECKPOINT), str(video), "--out", str(out / name), *SMALL, *options]
        code, _, err = predict_cli(argv, capsys)
        assert code == 0, err
    assert audio_packets(out / "all" / "talk" / "overlay.mp4") == sound
    frames, _, _ = decode(out / "all" / "talk" / "overlay.mp4")
    assert len(frames) == 12
    assert audio_packets(out / "strided" / "talk" / "overlay.mp4") == []
