"""Videos in and out through PyAV (FFmpeg's libraries, shipped in its wheel): a video file or a folder of
frames read one frame at a time, and a video written frame by frame as the frames come, so that
neither holds more than a frame whatever the video's length.

    source = probe(path)               # refuses a missing path, an unreadable or empty video
    for frame in read_frames(source):  # (H, W, 3) uint8 RGB, decoded when asked for
        ...
    suffix, codec = output_format(source, fps, source.time_base)  # before any frame is read
    with VideoWriter(path, codec, fps, source.size, source.time_base) as writer:
        for time, frame in read_timed_frames(source):
            writer.write(frame, time)
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, VideoReformatter
from PIL import Image, ImageOps

from ifrvis.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# A frame image's largest size: 64 Mpx (192 MiB decoded) is above any camera's video frame (8K: 33 Mpx).
# Checked from the header before decoding: a damaged or hostile PNG of a few bytes may declare 200 Mpx.
MAX_FRAME_PIXELS = 8192 * 8192
# FFmpeg's muxer of each container an overlay may keep (it names .m4v's "ipod")
MUXERS = {".mp4": "mp4", ".m4v": "ipod", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
# Encoders of a container's usual codecs, preferred first, after the input's own codec: an overlay
# keeps the input's container and codec family where it can (`output_format`). Frame folders, and the
# inputs nothing else writes, are written as mp4.
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
# x265 (an HEVC input's overlay) prints some 40 lines of settings per video unless told to say errors only;
# on 640 x 360 its ultrafast preset took 11 ms a frame (x264 veryfast: 6), its veryfast 20-30 ms.
ENCODER_OPTIONS = {
    "libx264": {"preset": "veryfast"},
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=error"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
}
# An overlay's pixel formats, preferred first: 4:2:0 (what every player reads), then full chroma for
# the sizes an encoder's 4:2:0 refuses (odd sides in H.264), and MJPEG's full-range variants.
PIXEL_FORMATS = ("yuv420p", "yuv444p", "yuvj420p", "yuvj444p", "rgb24", "gbrp")
# The RGB -> YUV matrices of an overlay's frames, and the tags that say so (FFmpeg's AVColorSpace,
# AVColorPrimaries and AVColorTransferCharacteristic share these numbers): BT.709 for HD, BT.601 (SMPTE
# 170M) below, as a player guesses for a video without tags (mpv: HD from 1280 px wide or 577 px high).
BT709, BT601 = (Colorspace.ITU709, 1), (Colorspace.ITU601, 6)
UNTAGGED = 2  # AVCOL_SPC_UNSPECIFIED: a decoded frame without a colour matrix tag


def guessed_matrix(size: tuple[int, int]) -> tuple[Colorspace, int]:
    """(swscale's matrix, FFmpeg's tag) that a player assumes for a YUV video of `size` (H, W) without
    colour tags: BT.709 for HD, BT.601 below."""
    return BT709 if size[1] >= 1280 or size[0] > 576 else BT601


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
        hint = " (the file may be cut short)" if cut_before_index(path) else ""
        raise VideoError(f"{path}: not a readable video: {_ffmpeg_message(error)}{hint}") from None


def cut_before_index(path: Path) -> bool:
    """Whether `path` is an MP4 or QuickTime file (its first box ftyp) without an index (moov) whose
    last box runs past the file's end: a recording cut short (a full card, a copy stopped midway) before
    the index a camera writes last, which FFmpeg reports only as invalid data."""
    boxes, offset = [], 0
    try:
        end = path.stat().st_size
        with path.open("rb") as file:
            while offset + 8 <= end and len(boxes) < 1000:  # top-level boxes: a handful in a video
                file.seek(offset)
                header = file.read(16)
                size, kind = struct.unpack(">I4s", header[:8])
                if size == 1 and len(header) == 16:  # a 64-bit size follows (a large mdat)
                    size = struct.unpack(">Q", header[8:])[0]
                elif size == 0:  # up to the end of the file
                    size = end - offset
                if size < 8:  # no box: not an MP4
                    return False
                boxes.append(kind)
                offset += size
    except OSError:  # unreadable: FFmpeg's own message says so
        return False
    return boxes[:1] == [b"ftyp"] and b"moov" not in boxes and offset > end


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


def read_frames(source: Source, warn: Callable[[str], None] | None = None) -> Iterator[np.ndarray]:
    """The frames of `source`, (H, W, 3) uint8 RGB at `source.size`, each decoded when asked for
    (`read_timed_frames` without the times)."""
    for _, frame in read_timed_frames(source, warn):
        yield frame


def read_timed_frames(
    source: Source, warn: Callable[[str], None] | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """(presentation time, frame) of each frame of `source`: the time in `source.time_base` units from
    the first frame (a variable frame rate's irregular steps kept), a folder's frame index; the frame
    (H, W, 3) uint8 RGB at `source.size`, decoded when asked for.
    A video is decoded packet by packet: a packet FFmpeg cannot decode (a damaged region) is skipped and
    the decoder resumes at the next, as players do, instead of losing every later frame. A video that
    cannot be read past some point (a file cut short, its index at the start declaring more) ends there,
    the frames before it kept. Either way `warn` gets one line at the end saying what was lost and
    where; a video that yields no frame at all raises a VideoError."""
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
    count, first, time, losses = 0, None, -step, Losses()
    try:
        with av.open(str(source.path)) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                # the demuxer's last packet (empty, no time) only flushes the decoder: not one of the file's
                losses.packets += packet.size > 0 or packet.dts is not None
                try:
                    frames = packet.decode()
                except av.FFmpegError as error:
                    losses.skip(packet, stream, error)
                    continue
                for frame in frames:
                    first = (frame.pts or 0) if first is None else first
                    time = time + step if frame.pts is None else frame.pts - first
                    stored = reformatter.reformat(
                        frame, format="rgb24", width=width, height=height, src_colorspace=matrix_of(frame)
                    )
                    yield time, np.ascontiguousarray(np.rot90(stored.to_ndarray(), source.quarter_turns))
                    count += 1
    except av.FFmpegError as error:  # the demuxer's: nothing can be read past here
        losses.end = error
    if not count:
        error = losses.end or losses.error
        reason = _ffmpeg_message(error) if error is not None else "the decoder gave no frame"
        raise VideoError(f"{source.path}: cannot decode: {reason}") from None
    message = losses.message(count, source.num_frames)
    if message and warn is not None:
        warn(f"{source.path}: {message}")


def matrix_of(frame: av.VideoFrame) -> Colorspace | int | None:
    """The YUV -> RGB matrix a decoded frame is read with: its tag, or for an untagged frame what a
    player assumes (`guessed_matrix`; swscale alone would read BT.601 at every size, shifting an HD
    video's colours: BT.709's (200, 40, 60) comes out (185, 20, 60)); None for RGB frames. The frame's
    range (full or limited) PyAV reads from the frame itself."""
    if frame.format.is_rgb:
        return None
    if frame.colorspace == UNTAGGED:
        return guessed_matrix((frame.height, frame.width))[0]
    return frame.colorspace


class Losses:
    """What of a video `read_timed_frames` could not decode: the packets skipped (how many, from when to
    when, the first error), where the demuxer stopped (`end`, its error), and how many packets it read
    (`packets`: a file cut short may simply end, before the frames its index declares)."""

    def __init__(self):
        self.packets, self.skipped, self.times = 0, 0, []
        self.error: av.FFmpegError | None = None
        self.end: av.FFmpegError | None = None

    def skip(self, packet: av.Packet, stream: av.video.stream.VideoStream, error: av.FFmpegError) -> None:
        self.skipped += 1
        self.error = self.error or error
        pts = packet.pts if packet.pts is not None else packet.dts
        if pts is not None and packet.time_base:  # seconds from the video's start, as a player counts
            self.times.append(float((pts - (stream.start_time or 0)) * packet.time_base))

    def message(self, count: int, declared: int | None) -> str | None:
        """One line on the losses of a video of which `count` frames were decoded and whose container
        declares `declared` (None: unknown), e.g. "4 undecodable packets skipped at 0.64-0.80 s
        (Invalid data found when processing input): 56 frames kept"; None without any loss."""
        parts = []
        if self.skipped:
            where = ""
            if self.times:
                low, high = min(self.times), max(self.times)
                where = f" at {low:.2f} s" if low == high else f" at {low:.2f}-{high:.2f} s"
            plural = "s" if self.skipped > 1 else ""
            parts.append(
                f"{self.skipped} undecodable packet{plural} skipped{where} ({_ffmpeg_message(self.error)})"
            )
        if self.end is not None:
            parts.append(f"cannot read past frame {count - 1} ({_ffmpeg_message(self.end)})")
        elif declared and self.packets < declared:
            parts.append(
                f"the file ends after {self.packets} of the {declared} frames it declares (cut short?)"
            )
        return f"{'; '.join(parts)}: frames 0-{count - 1} kept" if parts else None


def quarter_turns(degrees: float) -> int:
    """A display matrix's rotation (PyAV's `VideoFrame.rotation`: degrees counterclockwise) as quarter
    turns in 0..3, rounded to the nearest (cameras write multiples of 90)."""
    return round(degrees / 90) % 4


def _read_image(path: Path) -> np.ndarray:
    """A frame image as (H, W, 3) uint8 RGB, as an image viewer shows it (`image_rgb`); a VideoError for
    one that cannot be read, whatever Pillow raises on damaged data, or one over MAX_FRAME_PIXELS (said
    before it is decoded: a few bytes of PNG may declare 20000 x 10000 px)."""
    too_large = f"{path}: the image declares more than {MAX_FRAME_PIXELS} pixels: damaged, or no video frame"
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_FRAME_PIXELS:
                raise VideoError(f"{too_large} ({image.width}x{image.height} px)")
            return image_rgb(image)
    except VideoError:
        raise
    except Image.DecompressionBombError:  # Pillow's own bound (twice its MAX_IMAGE_PIXELS), met in open
        raise VideoError(too_large) from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:  # what Pillow's decoders raise on bad data
        raise VideoError(f"{path}: cannot read the frame: {error}") from None


def image_rgb(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of `image` upright (its EXIF orientation applied: a phone stores a photo as
    its sensor saw it and tags how to turn it); 16-bit greyscale (PNG's, Pillow's mode "I;16" or "I")
    scaled to 8 bits, where convert("RGB") would clip every level above 255 of 65535 to white."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I"):
        grey = np.asarray(image).astype(np.int64).clip(0, 65535)
        return np.repeat(((grey * 255 + 32767) // 65535).astype(np.uint8)[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def _ffmpeg_message(error: av.FFmpegError) -> str:
    return error.strerror or str(error)


def output_format(source: Source, fps: Fraction | float, time_base: Fraction) -> tuple[str, str]:
    """(file suffix, encoder) of an overlay of `source` that `VideoWriter` can write at `fps` and
    `time_base` (`writable`, decided before the prediction: nothing is predicted for an overlay that
    cannot be written): the input's container and codec where both can, else the container's usual
    codec, else H.264 in mp4. An input's codec its container alone holds (GIF, FLV, WMV, Theora: no
    overlay is written in .gif, .flv, .wmv or .ogv) or that takes standard frame rates only (MPEG-1 and
    MPEG-2, whose encoders refuse a container's 1/90000 s) falls back. Frame folders are written as mp4."""
    suffix = source.path.suffix.lower() if not source.images else FOLDER_SUFFIX
    suffix = suffix if suffix in MUXERS else FOLDER_SUFFIX
    tried = [(suffix, name) for name in (source.codec, *ENCODERS[suffix]) if name]
    tried += [(FOLDER_SUFFIX, name) for name in ENCODERS[FOLDER_SUFFIX]]
    for suffix, name in tried:
        encoder = _encoder(name)
        if encoder is not None and writable(suffix, encoder, fps, source.size, time_base):
            return suffix, encoder
    names = ", ".join(dict.fromkeys(name for _, name in tried))
    raise VideoError(
        f"{source.path}: this FFmpeg build writes none of {names} at {source.size[1]}x{source.size[0]} px"
    )


def _encoder(codec: str) -> str | None:
    """FFmpeg's encoder of `codec` ("h264" -> "libx264"), None in a build without one."""
    try:
        return av.codec.Codec(codec, "w").name
    except (av.FFmpegError, ValueError):
        return None


def writable(
    suffix: str, encoder: str, fps: Fraction | float, size: tuple[int, int], time_base: Fraction
) -> bool:
    """Whether a `suffix` file of `encoder` frames of `size` at `fps` and `time_base` can be written: the
    stream `VideoWriter` would make, made in memory, its encoder opened and the file's header written,
    no frame encoded. A container refuses a codec it cannot hold (ValueError: mp4 and GIF), an encoder
    the size, format or time base it cannot take (FFmpegError: MPEG-2 and 1/90000 s)."""
    with av.open(io.BytesIO(), "w", format=MUXERS[suffix]) as container:
        try:
            add_video_stream(container, encoder, fps, size, time_base)
            container.start_encoding()
        except (av.FFmpegError, ValueError):
            return False
    return True


def pixel_format(codec: str, size: tuple[int, int]) -> str:
    """The first of PIXEL_FORMATS (else of the codec's own) that `codec` encodes at `size` (H, W): 4:2:0,
    which every player reads, unless the encoder refuses the size (H.264's 4:2:0 needs even sides, its
    4:4:4 takes odd ones: a 333 x 187 video stays 333 x 187)."""
    formats = [f.name for f in av.codec.Codec(codec, "w").video_formats or ()]
    for name in [f for f in PIXEL_FORMATS if not formats or f in formats] + formats:
        context = av.CodecContext.create(codec, "w")
        context.height, context.width, context.pix_fmt, context.time_base = *size, name, Fraction(1, 25)
        context.options = ENCODER_OPTIONS.get(codec, {})  # x265's quiet log among them
        try:
            context.open()  # the encoder's own check of the size and format; nothing is written
        except (av.FFmpegError, ValueError):
            continue
        return name
    raise VideoError(f"{codec} encodes no pixel format at {size[1]}x{size[0]} px")


def add_video_stream(
    container: av.container.OutputContainer,
    encoder: str,
    fps: Fraction | float,
    size: tuple[int, int],
    time_base: Fraction,
) -> tuple[av.video.stream.VideoStream, Fraction]:
    """The overlay's video stream in `container` (`VideoWriter`'s, and `writable`'s trial of it) -> (the
    stream, its time base: `time_base`, unless finer than MPEG-4 Part 2 takes). The ValueError or
    FFmpegError of a container or encoder that refuses it."""
    stream = container.add_stream(encoder, rate=Fraction(fps).limit_denominator(65535))
    stream.height, stream.width = size
    stream.pix_fmt = pixel_format(encoder, size)
    stream.options = ENCODER_OPTIONS.get(encoder, {})
    # MPEG-4 Part 2 takes time bases down to 1/65535 s: a finer one (MPEG-TS's 1/90000) is rounded
    # to 1/60000, exact for milliseconds and the usual frame rates (24, 25, 30000/1001, 50, 60)
    time_base = Fraction(time_base)
    time_base = time_base if time_base.denominator <= 65535 else Fraction(1, 60000)
    stream.codec_context.time_base = time_base
    if encoder == "libx265" and container.format.name in ("mp4", "mov", "ipod"):
        # Apple's players open HEVC in MP4 and QuickTime tagged hvc1 only (FFmpeg's default is hev1)
        stream.codec_context.codec_tag = "hvc1"
    colours = yuv_colours(stream.pix_fmt, size)
    if colours is not None:
        context = stream.codec_context
        _, tag, context.color_range = colours
        context.colorspace = context.color_primaries = context.color_trc = tag
    return stream, time_base


def yuv_colours(pix_fmt: str, size: tuple[int, int]) -> tuple[Colorspace, int, ColorRange] | None:
    """(swscale's matrix, FFmpeg's tag, range) that an overlay of `size` (H, W) in YUV `pix_fmt` is
    converted with and tagged: BT709 or BT601 as a player without tags would guess, full range for
    MJPEG's yuvj formats; None for RGB formats (PNG, 4:4:4 as gbrp), which have no matrix."""
    layout = av.VideoFormat(pix_fmt)
    if layout.is_rgb or layout.has_palette or len(layout.components) < 3:
        return None
    matrix, tag = guessed_matrix(size)
    return matrix, tag, ColorRange.JPEG if pix_fmt.startswith("yuvj") else ColorRange.MPEG


class VideoWriter:
    """A video encoded frame by frame: `write((H, W, 3) uint8 RGB, time)`, then `close()` (or `with`), at
    the frames' own size, odd sides included (`pixel_format`), each frame at its own presentation time
    (`time` in units of `time_base`: a variable frame rate stays as it was); `fps`: the average rate.
    A container or encoder that refuses the stream raises a VideoError (`output_format` picks one that
    does not)."""

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
        self.audio = None
        try:
            self.audio = AudioCopy.of(audio_from, self.container) if audio_from is not None else None
            self.stream, self.time_base = add_video_stream(self.container, codec, fps, size, time_base)
        except (av.FFmpegError, ValueError) as error:
            self._abandon()
            raise VideoError(f"{path}: cannot write {codec} video: {error}") from None
        self.rescale = Fraction(time_base) / self.time_base
        # the frames converted here with the matrix the stream is tagged with, not the encoder's default
        self.colours, self.reformatter = yuv_colours(self.stream.pix_fmt, size), VideoReformatter()

    def write(self, frame: np.ndarray, time: int) -> None:
        """Encode one (H, W, 3) uint8 RGB frame of the writer's size, shown at `time` (in `time_base`)."""
        if frame.shape[:2] != self.size:
            raise ValueError(f"frame of size {frame.shape[:2]}, the video's is {self.size}")
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        if self.colours is not None:
            matrix, _, color_range = self.colours
            picture = self.reformatter.reformat(
                picture, format=self.stream.pix_fmt, dst_colorspace=matrix, dst_color_range=color_range
            )
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

    def _abandon(self) -> None:
        """Close the files without finishing the video (an error on the way)."""
        if self.audio is not None:
            self.audio.close()
        self.container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._abandon()


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
