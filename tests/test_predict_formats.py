"""The overlay's container and codec (`output_format`, `VideoWriter`) for inputs whose own an overlay cannot
be written in: codecs only their container holds (GIF, FLV, WMV), encoders that take standard frame
rates only (MPEG-1 and MPEG-2 in TS or Matroska); x265's settings, the colour tags. Each test writes
its own small video with PyAV."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from test_predict import CHECKPOINT, CONFIG, SMALL, decode, predict_cli, synthetic_frames, write_video

from ifrvis.predict import Options, overlay_timing
from ifrvis.video_io import VideoError, VideoWriter, output_format, probe, read_timed_frames


def write_input(path: Path, codec: str, pix_fmt: str, frames: np.ndarray, rate: int = 25) -> Path:
    """(T, H, W, 3) uint8 frames as `codec` in the container `path`'s suffix names."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width, stream.pix_fmt = *frames.shape[1:3], pix_fmt
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize(
    "name, codec, pix_fmt, overlay",
    [
        ("anim.gif", "gif", "rgb8", (".mp4", "libx264")),  # mp4 holds no GIF
        ("clip.flv", "flv", "yuv420p", (".mp4", "libx264")),  # nor FLV1
        ("clip.wmv", "wmv2", "yuv420p", (".mp4", "libx264")),  # nor WMV
        ("tv.ts", "mpeg2video", "yuv420p", (".mp4", "libx264")),  # MPEG-2 refuses 1/90000 s
        ("dvd.mkv", "mpeg2video", "yuv420p", (".mkv", "libx264")),  # and Matroska's 1/1000 s
        ("old.mpg", "mpeg1video", "yuv420p", (".mp4", "libx264")),
        ("clip.avi", "mpeg4", "yuv420p", (".avi", "mpeg4")),  # kept as they are
        ("clip.webm", "libvpx-vp9", "yuv420p", (".webm", "libvpx-vp9")),
    ],
)
def test_the_overlay_format_is_one_that_can_be_written(name, codec, pix_fmt, overlay, tmp_path):
    """The input's container and codec where the container holds the codec and its encoder takes the
    input's time base, else H.264 (in the input's container if it holds H.264, else mp4); the writer then
    writes every frame."""
    source = probe(write_input(tmp_path / name, codec, pix_fmt, synthetic_frames(4)))
    fps, time_base = overlay_timing(source, Options())
    assert output_format(source, fps, time_base) == overlay
    suffix, encoder = overlay
    with VideoWriter(tmp_path / f"overlay{suffix}", encoder, fps, source.size, time_base) as writer:
        for time, frame in read_timed_frames(source):
            writer.write(frame, time)
    frames, _, _ = decode(tmp_path / f"overlay{suffix}")
    assert len(frames) == 4


def test_a_batch_of_gif_and_mpeg2_inputs_is_predicted_and_drawn(tmp_path, capsys):
    """They used to fail after the whole prediction with a traceback that ended the batch."""
    frames = synthetic_frames(4)
    inputs = [
        write_input(tmp_path / "anim.gif", "gif", "rgb8", frames),
        write_input(tmp_path / "tv.ts", "mpeg2video", "yuv420p", frames),
        write_video(tmp_path / "shapes.mp4", frames),
    ]
    out = tmp_path / "out"
    code, stdout, err = predict_cli(
        [str(CONFIG), str(CHECKPOINT), *map(str, inputs), "--out", str(out), *SMALL], capsys
    )
    assert code == 0 and err == "", err
    assert [row.split()[1:3] for row in stdout.splitlines()[-3:]] == [["ok", "4"]] * 3
    for name in ("anim", "tv", "shapes"):
        overlay, _, codec = decode(out / name / "overlay.mp4")
        assert (len(overlay), codec) == (4, "h264")


def test_a_stream_the_container_refuses_is_a_video_error(tmp_path):
    """One line for the input's summary (`predict.INPUT_ERRORS`), not a ValueError ending the batch."""
    with pytest.raises(VideoError, match="cannot write gif video: 'mp4' format does not support 'gif' codec"):
        VideoWriter(tmp_path / "overlay.mp4", "gif", 12, (64, 96), Fraction(1, 12))
    assert not (tmp_path / "overlay.mp4").exists()


def test_an_hevc_overlay_is_quiet_fast_and_tagged_for_apple_players(tmp_path, capfd):
    """x265 prints its settings (some 40 lines a video) unless told not to; its ultrafast preset (one
    reference frame, subme=0; medium: 3 and 2) is nearest x264's veryfast in speed; hvc1 is the tag
    QuickTime and iOS open."""
    try:
        av.codec.Codec("libx265", "w")
    except (av.FFmpegError, ValueError):
        pytest.skip("this FFmpeg build has no x265")
    frames = synthetic_frames(4)
    with VideoWriter(tmp_path / "overlay.mp4", "libx265", 12, frames.shape[1:3], Fraction(1, 12)) as writer:
        for t, frame in enumerate(frames):
            writer.write(frame, t)
    assert "x265" not in capfd.readouterr().err
    data = (tmp_path / "overlay.mp4").read_bytes()
    assert b" ref=1 " in data and b" subme=0 " in data
    with av.open(str(tmp_path / "overlay.mp4")) as container:
        assert container.streams.video[0].codec_context.codec_tag == "hvc1"
    assert len(decode(tmp_path / "overlay.mp4")[0]) == 4


@pytest.mark.parametrize("size, matrix, tag", [((720, 1280), "ITU709", 1), ((64, 96), "ITU601", 6)])
def test_the_overlay_is_tagged_with_the_matrix_its_frames_are_converted_with(size, matrix, tag, tmp_path):
    """A player reads the colour matrix from the stream's tags, or without them guesses by the size:
    BT.709 for HD, BT.601 below. Either way a flat (200, 40, 60) comes back as written (BT.601 read as
    BT.709 would show (185, 20, 60))."""
    colour = (200, 40, 60)
    with VideoWriter(tmp_path / "overlay.mp4", "libx264", 12, size, Fraction(1, 12)) as writer:
        for t in range(2):
            writer.write(np.full((*size, 3), colour, np.uint8), t)
    with av.open(str(tmp_path / "overlay.mp4")) as container:
        context = container.streams.video[0].codec_context
        assert (context.colorspace, context.color_primaries, context.color_trc) == (tag, tag, tag)
        frame = next(container.decode(video=0))
        tagged = frame.to_ndarray(format="rgb24")
        guessed = frame.reformat(format="rgb24", src_colorspace=matrix).to_ndarray()
    for shown in (tagged, guessed):
        assert np.abs(shown[8:-8, 8:-8].astype(int) - colour).max() <= 3


@pytest.mark.parametrize(
    "size, matrix, tag",
    [
        ((720, 1280), "ITU709", None),  # an HD camera's file without tags: BT.709, as players read it
        ((64, 96), "ITU601", None),  # below HD: BT.601
        ((720, 1280), "ITU601", 6),  # tags say otherwise: the tags
        ((64, 96), "ITU709", 1),
    ],
)
def test_input_frames_are_read_with_their_tagged_matrix_or_a_players_guess(size, matrix, tag, tmp_path):
    """An HD video without colour tags was read with BT.601 (swscale's default at every size): BT.709's
    (200, 40, 60) came out (185, 20, 60), the colours the model saw shifted from what a player shows."""
    colour = (200, 40, 60)
    with av.open(str(tmp_path / "clip.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.height, stream.width, stream.pix_fmt = *size, "yuv420p"
        stream.codec_context.colorspace = tag or 2  # 2: unspecified
        picture = av.VideoFrame.from_ndarray(np.full((*size, 3), colour, np.uint8), format="rgb24")
        for t in range(2):
            frame = picture.reformat(format="yuv420p", dst_colorspace=matrix, dst_color_range="MPEG")
            frame.pts = t
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    frames = [frame for _, frame in read_timed_frames(probe(tmp_path / "clip.mp4"))]
    assert len(frames) == 2
    for frame in frames:
        assert np.abs(frame[8:-8, 8:-8].astype(int) - colour).max() <= 3
