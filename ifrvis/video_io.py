"""Videos in and out through PyAV (FFmpeg's libraries, shipped in its wheel): a video file or a folder of
frames read one frame at a time, and a video written frame by frame as the frames come, so that
neither holds more than a frame whatever the video's length.

    source = probe(path)               # refuses a missing path, an unreadable or empty video
    for frame in read_frames(source):  # (H, W, 3) uint8 RGB, decoded when asked for
        ...
    with VideoWriter(path, codec, fps, source.size, source.time_base) as writer:
        for time, frame in read_timed_frames(source):
            writer.write(frame, time)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from ifrvis.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Encoders of a container's usual codecs, preferred first, after the input's own codec: an overlay
# keeps the input's container and codec family. Frame folders are written as mp4.
ENCODERS = {
    ".mp4": ("libx264", "mpeg4"),
    ".m4v": ("libx264", "mpeg4"),
    ".mov": ("libx264", "mpeg4"),
    ".mkv": ("libx264", "libvpx-vp9", "mpeg4"),
    ".webm": ("libvpx-vp9", "libvpx"),
    ".avi": ("mpeg4", "mjpeg"),
}
FOLDER_SUFFIX = ".mp4"
# Encoder settings for an overlay (a preview, written once per run): speed first. On a 640 x 272 video
# x264's default preset (medium) took 37 ms a frame, veryfast 16 ms for a 5 % larger file; libvpx-vp9's
# defaults 211 ms a frame (more than the model), realtime at cpu-used 8 15 ms for 23 % more.
ENCODER_OPTIONS = {"libx264": {"preset": "veryfast"}, "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"}}
# An overlay's pixel formats, preferred first: 4:2:0 (what every player reads), then full chroma for
# the sizes an encoder's 4:2:0 refuses (odd sides in H.264), and MJPEG's full-range variants.
PIXEL_FORMATS = ("yuv420p", "yuv444p", "yuvj420p", "yuvj444p", "rgb24", "gbrp")


class VideoError(UserError):
    """A video file or frame folder that cannot be read, or holds no frames."""


@dataclass(frozen=True)
class Source:
    """One input: a video file, or a folder of frames (`images`, in `frame_order`)."""

    path: Path
    size: tuple[int, int]  # (H, W) of the first frame as displayed; every frame is read at this size
    images: tuple[Path, ...] = ()  # a folder's frames; empty for a video file
    fps: Fraction | None = None  # a video's average frame rate
    time_base: Fraction | None = None  # a video's unit of presentation time (`read_timed_frames`)
    codec: str = ""  # a video's codec, as FFmpeg names it
    num_frames: int | None = None  # as the container declares it (a hint: progress bars)
    # quarter turns counterclockwise that display a video's stored frames upright: its display matrix
    # (a phone's portrait video is stored landscape with a rotation tag of -90 here)
    quarter_turns: int = 0

    @property
    def stem(self) -> str:
        """The name of its output folder: a video's file name without suffix, a folder's name."""
        return self.path.stem if not self.images else self.path.resolve().name or "frames"


def probe(path: str | Path) -> Source:
    """`path` as a `Source`, its first frame read; a missing path, a folder without images, a file
    FFmpeg cannot read or that holds no video frame raise a `VideoError`."""
    path = Path(path)
    if path.is_dir():
        images = frame_order(path.iterdir())
        if not images:
            raise VideoError(f"{path}: no frames ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        first = _read_image(images[0])
        return Source(path, first.shape[:2], images=images, num_frames=len(images))
    if not path.is_file():
        raise VideoError(f"{path}: no such video file or frame folder")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: holds no video stream")
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)
            if first is None:
                raise VideoError(f"{path}: the video holds no frames")
            turns = quarter_turns(first.rotation)
            return Source(
                path,
                (first.width, first.height) if turns % 2 else (first.height, first.width),
                fps=stream.average_rate or stream.guessed_rate,
                time_base=stream.time_base,
                codec=stream.codec_context.name,
                num_frames=stream.frames or None,
                quarter_turns=turns,
            )
    except av.FFmpegError as error:
        raise VideoError(f"{path}: not a readable video: {_ffmpeg_message(error)}") from None


def frame_order(paths: Iterable[Path]) -> tuple[Path, ...]:
    """The frame images among `paths` in natural order (1.jpg, 2.jpg, ..., 10.jpg, as ffmpeg's `%d.jpg`
    names them, and 00001.jpg, ... alike), hidden files skipped: macOS's `._00001.jpg` resource forks
    and `.DS_Store` are not frames."""
    images = (p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    return tuple(sorted(images, key=lambda p: natural_key(p.name)))


def natural_key(name: str) -> tuple:
    """A sort key reading each run of digits in `name` as a number ("frame10" after "frame9"); the
    name itself breaks ties ("01" and "1")."""
    # re.split with a group alternates text and digit runs, so the key's items compare like with like
    parts = re.split(r"(\d+)", name.lower())
    return (*(int(part) if i % 2 else part for i, part in enumerate(parts)), name)


def read_frames(source: Source, truncated: Callable[[str], None] | None = None) -> Iterator[np.ndarray]:
    """The frames of `source`, (H, W, 3) uint8 RGB at `source.size`, each decoded when asked for
    (`read_timed_frames` without the times)."""
    for _, frame in read_timed_frames(source, truncated):
        yield frame


def read_timed_frames(
    source: Source, truncated: Callable[[str], None] | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """(presentation time, frame) of each frame of `source`: the time in `source.time_base` units from
    the first frame (a variable frame rate's irregular steps kept), a folder's frame index; the frame
    (H, W, 3) uint8 RGB at `source.size`, decoded when asked for.
    A video that cannot be decoded past some frame (a file cut short, its index at the start declaring
    more) ends there: the frames before it are kept and `truncated` gets a message naming the last good
    frame. One that yields no frame at all raises a VideoError."""
    if source.images:
        for t, image in enumerate(source.images):
            frame = _read_image(image)
            if frame.shape[:2] != source.size:
                raise VideoError(
                    f"{image}: frame of {frame.shape[0]}x{frame.shape[1]} px, the folder's first is "
                    f"{source.size[0]}x{source.size[1]}"
                )
            yield t, frame
        return
    height, width = source.size[:: -1 if source.quarter_turns % 2 else 1]  # as stored
    reformatter = VideoReformatter()  # one for the whole video: a new one per frame costs more than decoding
    # a frame without a time (some AVI and raw streams) comes one average frame after the one before
    step = max(1, round(1 / (source.fps * source.time_base))) if source.fps and source.time_base else 1
    count, first, time = 0, None, -step
    try:
        with av.open(str(source.path)) as container:
            for frame in container.decode(container.streams.video[0]):
                first = (frame.pts or 0) if first is None else first
                time = time + step if frame.pts is None else frame.pts - first
                stored = reformatter.reformat(frame, format="rgb24", width=width, height=height).to_ndarray()
                yield time, np.ascontiguousarray(np.rot90(stored, source.quarter_turns))
                count += 1
    except av.FFmpegError as error:
        if not count:
            raise VideoError(f"{source.path}: cannot decode: {_ffmpeg_message(error)}") from None
        if truncated is not None:
            truncated(
                f"{source.path}: cannot decode past frame {count - 1} ({_ffmpeg_message(error)}): "
                f"frames 0-{count - 1} kept"
            )


def quarter_turns(degrees: float) -> int:
    """A display matrix's rotation (PyAV's `VideoFrame.rotation`: degrees counterclockwise) as quarter
    turns in 0..3, rounded to the nearest (cameras write multiples of 90)."""
    return round(degrees / 90) % 4


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as error:
        raise VideoError(f"{path}: cannot read the frame: {error}") from None


def _ffmpeg_message(error: av.FFmpegError) -> str:
    return error.strerror or str(error)


def output_format(source: Source) -> tuple[str, str]:
    """(file suffix, encoder) of a video like `source`: its container and, when FFmpeg can encode it,
    its codec, else the container's usual one; mp4 (H.264) for a frame folder or another container."""
    suffix = source.path.suffix.lower() if not source.images else FOLDER_SUFFIX
    if suffix not in ENCODERS:
        suffix = FOLDER_SUFFIX
    for name in (source.codec, *ENCODERS[suffix]) if source.codec else ENCODERS[suffix]:
        try:
            return suffix, av.codec.Codec(name, "w").name
        except (av.FFmpegError, ValueError):  # no such encoder in this FFmpeg build
            continue
    raise VideoError(f"{source.path}: this FFmpeg build encodes none of {', '.join(ENCODERS[suffix])}")


def pixel_format(codec: str, size: tuple[int, int]) -> str:
    """The first of PIXEL_FORMATS (else of the codec's own) that `codec` encodes at `size` (H, W): 4:2:0,
    which every player reads, unless the encoder refuses the size (H.264's 4:2:0 needs even sides, its
    4:4:4 takes odd ones: a 333 x 187 video stays 333 x 187)."""
    formats = [f.name for f in av.codec.Codec(codec, "w").video_formats or ()]
    for name in [f for f in PIXEL_FORMATS if not formats or f in formats] + formats:
        context = av.CodecContext.create(codec, "w")
        context.height, context.width, context.pix_fmt, context.time_base = *size, name, Fraction(1, 25)
        try:
            context.open()  # the encoder's own check of the size and format; nothing is written
        except (av.FFmpegError, ValueError):
            continue
        return name
    raise VideoError(f"{codec} encodes no pixel format at {size[1]}x{size[0]} px")


class VideoWriter:
    """A video encoded frame by frame: `write((H, W, 3) uint8 RGB, time)`, then `close()` (or `with`), at
    the frames' own size, odd sides included (`pixel_format`), each frame at its own presentation time
    (`time` in units of `time_base`: a variable frame rate stays as it was); `fps`: the average rate."""

    def __init__(
        self,
        path: str | Path,
        codec: str,
        fps: Fraction | float,
        size: tuple[int, int],
        time_base: Fraction,
        audio_from: Path | None = None,
    ):
        self.size, self.first, self.last = size, None, None
        self.container = av.open(str(path), "w")
        self.audio = AudioCopy.of(audio_from, self.container) if audio_from is not None else None
        self.stream = self.container.add_stream(codec, rate=Fraction(fps).limit_denominator(65535))
        self.stream.height, self.stream.width = size
        self.stream.pix_fmt = pixel_format(codec, size)
        self.stream.options = ENCODER_OPTIONS.get(codec, {})
        # MPEG-4 Part 2 takes time bases down to 1/65535 s: a finer one (MPEG-TS's 1/90000) is rounded
        # to 1/60000, exact for milliseconds and the usual frame rates (24, 25, 30000/1001, 50, 60)
        time_base = Fraction(time_base)
        self.time_base = time_base if time_base.denominator <= 65535 else Fraction(1, 60000)
        self.stream.codec_context.time_base, self.rescale = self.time_base, time_base / self.time_base

    def write(self, frame: np.ndarray, time: int) -> None:
        """Encode one (H, W, 3) uint8 RGB frame of the writer's size, shown at `time` (in `time_base`)."""
        if frame.shape[:2] != self.size:
            raise ValueError(f"frame of size {frame.shape[:2]}, the video's is {self.size}")
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        self.first = time if self.first is None else self.first
        pts = round((time - self.first) * self.rescale)  # the video starts at its first frame
        # encoders refuse a time that does not increase (a damaged file's repeated timestamps)
        self.last = picture.pts = pts if self.last is None else max(pts, self.last + 1)
        picture.time_base = self.time_base
        if self.audio is not None:  # the sound up to this frame first: the file stays interleaved
            self.audio.mux_until(self.container, picture.pts * self.time_base)
        self._mux(picture)

    def close(self) -> None:
        self._mux(None)  # flush the encoder's delayed frames
        if self.audio is not None:
            self.audio.mux_until(self.container, None)
            self.audio.close()
        self.container.close()

    def _mux(self, frame: av.VideoFrame | None) -> None:
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:
            if self.audio is not None:
                self.audio.close()
            self.container.close()


class AudioCopy:
    """The first audio stream of a video file, its packets copied as they are (no decoding, no loss)
    into an output container as its video reaches their time."""

    def __init__(self, source: av.container.InputContainer, container: av.container.OutputContainer):
        self.input = source
        stream = source.streams.audio[0]
        self.stream = container.add_stream_from_template(stream)
        # the demuxer ends with an empty packet (no time): not sound
        self.packets = (packet for packet in source.demux(stream) if packet.pts is not None)
        self.pending = self._next()

    @classmethod
    def of(cls, path: Path, container: av.container.OutputContainer) -> AudioCopy | None:
        """The copy of `path`'s sound into `container`; None when it has none, or one the container
        cannot hold (AAC in WebM)."""
        source = av.open(str(path))
        streams = source.streams.audio
        if not streams or streams[0].codec_context.name not in container.supported_codecs:
            source.close()
            return None
        return cls(source, container)

    def mux_until(self, container: av.container.OutputContainer, seconds: Fraction | None) -> None:
        """Copy the packets that start at `seconds` or before (None: all left)."""
        while self.pending is not None and (
            seconds is None or self.pending.pts * self.pending.time_base <= seconds
        ):
            packet, self.pending = self.pending, self._next()
            packet.stream = self.stream
            container.mux(packet)

    def _next(self) -> av.Packet | None:
        try:
            return next(self.packets, None)
        except av.FFmpegError:  # a file cut short: the sound ends where it can be read
            return None

    def close(self) -> None:
        self.input.close()
