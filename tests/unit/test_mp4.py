"""Unit tests for the MP4 container and the sized blobs the local WaveSpeed simulator serves."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import tracemalloc
from pathlib import Path

import pytest

from kling_local import mp4
from kling_local.mp4 import VideoBlob, looks_like_mp4, parse_boxes, sample_video
from kling_local.mp4 import pictures as synthetic
from kling_pipeline import media

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"dinf", b"stbl"}
FULL_BOX_CONTAINERS = {b"dref": 8, b"stsd": 8}
VISUAL_SAMPLE_ENTRY = 78  # bytes of fixed fields before an avc1 entry's child boxes
STBL = "moov/trak/mdia/minf/stbl/"
AVC1 = STBL + "stsd/avc1"


def walk(data: bytes, start: int = 0, end: int | None = None) -> dict[str, list[tuple[int, int]]]:
    """Map each box path ("moov/trak/tkhd") to its (offset, size) occurrences.

    Written independently from the generator so that a bug there cannot hide itself here.
    """
    found: dict[str, list[tuple[int, int]]] = {}

    def visit(lo: int, hi: int, prefix: str) -> None:
        position = lo
        while position + 8 <= hi:
            size, kind = struct.unpack_from(">I4s", data, position)
            assert size >= 8, f"bad box size at {position}"
            assert position + size <= hi, f"box {kind!r} overflows its parent"
            path = f"{prefix}{kind.decode('latin-1')}"
            found.setdefault(path, []).append((position, size))
            if kind in CONTAINERS:
                visit(position + 8, position + size, path + "/")
            elif kind in FULL_BOX_CONTAINERS:
                visit(position + 8 + FULL_BOX_CONTAINERS[kind], position + size, path + "/")
            elif kind == b"avc1":
                visit(position + 8 + VISUAL_SAMPLE_ENTRY, position + size, path + "/")
            position += size
        assert position == hi, f"boxes under {prefix or '/'} do not fill their parent exactly"

    visit(start, len(data) if end is None else end, "")
    return found


def payload(data: bytes, boxes: dict[str, list[tuple[int, int]]], path: str) -> bytes:
    offset, size = boxes[path][0]
    return data[offset + 8 : offset + size]


def sample_table(data: bytes) -> tuple[list[int], list[int]]:
    """(sample sizes from stsz, chunk offsets from stco)."""
    boxes = walk(data)
    stsz = payload(data, boxes, STBL + "stsz")
    _, sample_size, count = struct.unpack_from(">III", stsz, 0)
    assert sample_size == 0
    sizes = list(struct.unpack_from(f">{count}I", stsz, 12))
    stco = payload(data, boxes, STBL + "stco")
    _, chunk_count = struct.unpack_from(">II", stco, 0)
    offsets = list(struct.unpack_from(f">{chunk_count}I", stco, 8))
    return sizes, offsets


def samples_of(data: bytes) -> list[bytes]:
    sizes, offsets = sample_table(data)
    return [data[offset : offset + size] for offset, size in zip(offsets, sizes, strict=True)]


def write_blob(blob: VideoBlob, target: Path) -> Path:
    with target.open("wb") as handle:
        for chunk in blob.iter_bytes():
            handle.write(chunk)
    return target


def test_sample_video_starts_with_isom_ftyp_naming_avc1_when_generated() -> None:
    # Given the sample video
    data = sample_video()

    # When reading its first box
    size, kind, major, minor = struct.unpack_from(">I4s4sI", data, 0)
    compatible = {data[i : i + 4] for i in range(16, size, 4)}

    # Then it is an ftyp with the isom major brand, avc1 among the compatible brands
    assert kind == b"ftyp"
    assert major == b"isom"
    assert minor == 0x200
    assert compatible == {b"isom", b"iso2", b"avc1", b"mp41"}


def test_sample_video_top_level_boxes_cover_file_when_parsed() -> None:
    # Given the sample video
    data = sample_video()

    # When parsing the top-level boxes
    boxes = parse_boxes(data)

    # Then ftyp, moov (first, so playback can start early) and mdat tile the whole file
    assert [kind for kind, _ in boxes] == ["ftyp", "moov", "mdat"]
    assert sum(size for _, size in boxes) == len(data)
    assert 50_000 <= len(data) <= 1_000_000


def test_sample_video_track_has_required_boxes_when_walked() -> None:
    # Given the sample video's box tree
    data = sample_video()
    boxes = walk(data)

    # When looking for the boxes a player needs
    required = [
        "moov/mvhd",
        "moov/trak/tkhd",
        "moov/trak/mdia/mdhd",
        "moov/trak/mdia/hdlr",
        "moov/trak/mdia/minf/vmhd",
        "moov/trak/mdia/minf/dinf/dref",
        STBL + "stsd",
        AVC1 + "/avcC",
        STBL + "stts",
        STBL + "stss",
        STBL + "stsc",
        STBL + "stsz",
        STBL + "stco",
    ]

    # Then each exists exactly once, with a 'vide' handler and one video track
    for path in required:
        assert len(boxes.get(path, [])) == 1, path
    assert len(boxes["moov/trak"]) == 1
    assert payload(data, boxes, "moov/trak/mdia/hdlr")[8:12] == b"vide"


def test_sample_entry_declares_constrained_baseline_avc_when_inspected() -> None:
    # Given the sample description of the video track
    data = sample_video()
    boxes = walk(data)

    # When reading the avc1 entry and its decoder configuration record
    entry = payload(data, boxes, AVC1)
    width, height = struct.unpack_from(">HH", entry, 24)
    avcc = payload(data, boxes, AVC1 + "/avcC")
    version, profile, compatibility, level, length_size, sps_count = avcc[:6]
    (sps_length,) = struct.unpack_from(">H", avcc, 6)
    sps = avcc[8 : 8 + sps_length]
    pps_count = avcc[8 + sps_length]

    # Then it is H.264 Constrained Baseline (profile 66, flags 0xC0) level 2.0, 4-byte lengths,
    # one SPS (NAL type 7) agreeing with the record, and one PPS
    assert (width, height) == (mp4.WIDTH, mp4.HEIGHT)
    assert (version, profile, compatibility, level) == (1, 66, 0xC0, 20)
    assert length_size & 0b11 == 3
    assert (sps_count & 0b11111, pps_count) == (1, 1)
    assert sps[0] & 0x1F == 7
    assert sps[1:4] == bytes((profile, compatibility, level))
    assert mp4.codec_string() == "avc1.42C014"


@pytest.mark.parametrize("seconds", [5, 10])
def test_sample_tables_count_every_frame_when_read(seconds: int) -> None:
    # Given a clip of some seconds
    data = sample_video(seconds)
    boxes = walk(data)

    # When reading sample counts and durations
    sizes, offsets = sample_table(data)
    _, entries, stts_count, delta = struct.unpack_from(">IIII", payload(data, boxes, STBL + "stts"))
    _, _, _, timescale, duration = struct.unpack_from(
        ">IIIII", payload(data, boxes, "moov/trak/mdia/mdhd")
    )

    # Then stsz, stco and stts all describe FPS frames a second, lasting exactly that long
    frame_count = seconds * mp4.FPS
    assert len(sizes) == len(offsets) == frame_count
    assert (entries, stts_count) == (1, frame_count)
    assert delta * frame_count == duration
    assert duration / timescale == pytest.approx(seconds)


def test_sync_samples_are_the_idr_frames_when_listed() -> None:
    # Given the sample video's sync sample table and its samples
    data = sample_video()
    stss = payload(data, walk(data), STBL + "stss")
    _, count = struct.unpack_from(">II", stss)
    sync = set(struct.unpack_from(f">{count}I", stss, 8))
    samples = samples_of(data)

    # When reading each sample's NAL unit type
    nal_types = [sample[4] & 0x1F for sample in samples]

    # Then exactly the IDR samples (type 5) are listed, one every keyframe interval
    assert sync == {n + 1 for n, kind in enumerate(nal_types) if kind == 5}
    assert sync == set(range(1, len(samples) + 1, mp4.KEYFRAME_INTERVAL))
    assert set(nal_types) == {5, 1}


def test_chunk_offsets_point_at_whole_nal_units_inside_mdat_when_resolved() -> None:
    # Given the sample video's mdat and sample tables
    data = sample_video()
    ((mdat_offset, mdat_size),) = walk(data)["mdat"]
    sizes, offsets = sample_table(data)

    # When resolving each sample
    samples = samples_of(data)

    # Then every sample is one length-prefixed NAL unit, back to back, filling mdat
    for offset, size, sample in zip(offsets, sizes, samples, strict=True):
        assert mdat_offset + 8 <= offset
        assert offset + size <= mdat_offset + mdat_size
        (nal_length,) = struct.unpack_from(">I", sample)
        assert nal_length == size - 4
        assert sample[4] & 0x80 == 0  # forbidden_zero_bit
    assert offsets[0] == mdat_offset + 8
    assert offsets[-1] + sizes[-1] == mdat_offset + mdat_size


def test_sample_video_is_identical_when_generated_twice() -> None:
    # Given two calls
    first = sample_video()
    second = sample_video()

    # Then the bytes are identical (deterministic and cached)
    assert first == second
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()


def test_videoblob_default_size_equals_sample_when_no_size_given() -> None:
    # Given a blob without an explicit size
    blob = VideoBlob()

    # When reading it whole
    data = b"".join(blob.iter_bytes())

    # Then it is exactly the sample video
    assert blob.size == len(sample_video()) == VideoBlob.min_size()
    assert data == sample_video()


@pytest.mark.parametrize("seconds", [5, 10])
def test_clip_size_is_the_same_for_every_variant_when_unpadded(seconds: int) -> None:
    # Given unpadded clips of very different variants
    variants = [0, 1, 0x5A5A5A, mp4.MAX_VARIANT - 1]

    # When generating them
    blobs = [VideoBlob(variant=variant, seconds=seconds) for variant in variants]

    # Then their sizes match (so any variant can be served at min_size) but their bytes differ
    assert {blob.size for blob in blobs} == {VideoBlob.min_size(seconds)}
    assert len({blob.sha256 for blob in blobs}) == len(variants)
    assert VideoBlob.min_size(10) > VideoBlob.min_size(5)


def test_videoblob_has_exact_size_when_5mb_requested() -> None:
    # Given a 5 MB blob
    blob = VideoBlob(5_000_000)

    # When streaming all of it
    data = b"".join(blob.iter_bytes())

    # Then the length is exact and the top-level boxes tile the whole file
    assert blob.size == 5_000_000
    assert len(data) == 5_000_000
    boxes = parse_boxes(data)
    assert [kind for kind, _ in boxes] == ["ftyp", "moov", "mdat", "free"]
    assert sum(size for _, size in boxes) == len(data)


def test_padded_blob_keeps_sample_offsets_valid_when_grown() -> None:
    # Given a padded 10-second blob
    data = b"".join(VideoBlob(3_000_000, variant=4, seconds=10).iter_bytes())

    # When resolving its samples
    table = sample_table(data)

    # Then the sample table and the samples are those of the unpadded clip
    unpadded = VideoBlob(variant=4, seconds=10).read(0, VideoBlob.min_size(10))
    assert table == sample_table(unpadded)
    assert samples_of(data) == samples_of(unpadded)


@pytest.mark.parametrize("extra", [1, 3, 7])
def test_blob_grows_mdat_when_gap_too_small_for_a_box(extra: int) -> None:
    # Given a size only a few bytes above the minimum (too small for an 8-byte free box)
    size = VideoBlob.min_size() + extra

    # When generating it
    data = b"".join(VideoBlob(size).iter_bytes())

    # Then the file is exact, still tiles into ftyp/moov/mdat and frames are unchanged
    boxes = parse_boxes(data)
    assert len(data) == size
    assert [kind for kind, _ in boxes] == ["ftyp", "moov", "mdat"]
    assert sum(box_size for _, box_size in boxes) == size
    assert sample_table(data) == sample_table(sample_video())


def test_blob_rejects_size_when_below_minimum() -> None:
    # Given a size smaller than the sample video
    too_small = VideoBlob.min_size() - 1

    # When / Then construction fails loudly
    with pytest.raises(ValueError, match="minimum"):
        VideoBlob(too_small)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"variant": -1}, "variant"),
        ({"variant": mp4.MAX_VARIANT}, "variant"),
        ({"seconds": 0}, "seconds"),
        ({"seconds": 61}, "seconds"),
    ],
)
def test_blob_rejects_arguments_when_out_of_range(arguments: dict[str, int], message: str) -> None:
    # Given an out-of-range variant or duration / When building / Then it is refused by name
    with pytest.raises(ValueError, match=message):
        VideoBlob(**arguments)


@pytest.mark.parametrize("start", [0, 1, 27, 4_095, 65_536, 1_048_575, 1_048_576, 2_999_999])
@pytest.mark.parametrize("chunk_size", [1 << 20, 70_001])
def test_iter_bytes_equals_slice_when_started_at_offset(start: int, chunk_size: int) -> None:
    # Given a multi-megabyte blob and its full content
    blob = VideoBlob(3_000_000, variant=11)
    whole = b"".join(blob.iter_bytes())

    # When iterating from an offset
    chunks = list(blob.iter_bytes(start, chunk_size))

    # Then the concatenation equals the slice and no chunk exceeds the requested size
    assert b"".join(chunks) == whole[start:]
    assert all(0 < len(chunk) <= chunk_size for chunk in chunks)


def test_iter_bytes_yields_nothing_when_started_at_end() -> None:
    # Given a blob
    blob = VideoBlob(400_000)

    # When starting exactly at its end / Then nothing is yielded; past the end is an error
    assert list(blob.iter_bytes(blob.size)) == []
    with pytest.raises(ValueError):
        list(blob.iter_bytes(blob.size + 1))


def test_sha256_matches_hashlib_when_computed() -> None:
    # Given a blob
    blob = VideoBlob(2_500_000, variant=3)

    # When hashing its bytes independently
    expected = hashlib.sha256(b"".join(blob.iter_bytes())).hexdigest()

    # Then the cached property agrees, twice
    assert blob.sha256 == expected
    assert blob.sha256 == expected


def test_padding_detects_reordered_chunks_when_content_compared() -> None:
    # Given a padded blob
    blob = VideoBlob(1_000_000)
    chunks = list(blob.iter_bytes(chunk_size=65_536))

    # When two padding chunks are swapped (a classic resume bug)
    swapped = chunks[:6] + [chunks[7], chunks[6]] + chunks[8:]

    # Then the digest changes, because padding is not a repeated constant
    assert hashlib.sha256(b"".join(swapped)).hexdigest() != blob.sha256


def test_variants_differ_when_same_size() -> None:
    # Given two variants of the same size
    first = VideoBlob(400_000, variant=1)
    second = VideoBlob(400_000, variant=2)

    # Then they are distinct but equally sized
    assert first.size == second.size
    assert first.sha256 != second.sha256
    assert VideoBlob(None, variant=1).sha256 != VideoBlob(None, variant=2).sha256


def test_large_blob_streams_tail_without_materialising_when_1gib() -> None:
    # Given a 1 GiB blob, traced for memory
    was_tracing = tracemalloc.is_tracing()
    tracemalloc.start()
    tracemalloc.reset_peak()
    baseline, _ = tracemalloc.get_traced_memory()
    try:
        blob = VideoBlob(1 << 30, variant=9)

        # When reading only its last bytes
        tail = b"".join(blob.iter_bytes(blob.size - 100))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()

    # Then the tail has the right length and memory stayed tiny compared with the size
    assert len(tail) == 100
    assert peak - baseline < 8 * 1024 * 1024
    head = blob.read(0, 400_000)
    assert [kind for kind, _ in parse_boxes(head)] == ["ftyp", "moov", "mdat", "free"]
    assert sum(size for _, size in parse_boxes(head)) == 1 << 30


def test_parse_boxes_reads_largesize_and_rejects_bad_sizes() -> None:
    # Given a 64-bit sized box and a corrupt one
    large = struct.pack(">I4sQ", 1, b"mdat", 24) + b"\x00" * 8
    corrupt = struct.pack(">I4s", 4, b"junk")

    # When / Then the large box reports its 64-bit size and the corrupt one raises
    assert parse_boxes(large) == [("mdat", 24)]
    with pytest.raises(ValueError):
        parse_boxes(corrupt)


def test_parse_boxes_lists_box_when_body_extends_past_prefix() -> None:
    # Given only the first bytes of a padded file
    prefix = VideoBlob(5_000_000).read(0, 1000)

    # When parsing that prefix
    boxes = parse_boxes(prefix)

    # Then the boxes whose headers are present are listed with their declared sizes
    assert boxes[0] == ("ftyp", 32)
    assert boxes[1][0] == "moov"


def test_looks_like_mp4_is_the_pipelines_own_check_when_imported() -> None:
    # Given the check the local tooling re-exports / Then it is the finalize step's one check
    assert looks_like_mp4 is media.looks_like_mp4


@pytest.mark.parametrize(
    "first_bytes",
    [
        b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>",
        b"",
        b"\x00\x00\x00\x1cftyp",
        struct.pack(">I4s4s", 0x7FFFFFFF, b"ftyp", b"isom") + b"\x00" * 20,
        struct.pack(">I4s4s", 28, b"moov", b"isom") + b"\x00" * 20,
        b'{"code": 404, "message": "Not Found", "data": null}',
    ],
)
def test_looks_like_mp4_false_when_not_an_mp4_header(first_bytes: bytes) -> None:
    # Given bytes that are not the start of an MP4 / When checked / Then rejected
    assert looks_like_mp4(first_bytes) is False


def test_looks_like_mp4_true_when_sample_or_blob_prefix() -> None:
    # Given the first bytes of real outputs / When checked / Then accepted
    assert looks_like_mp4(sample_video()[:64]) is True
    assert looks_like_mp4(VideoBlob(2_000_000, variant=5).read(0, 32)) is True


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not installed")
@pytest.mark.parametrize("seconds", [5, 10])
def test_ffprobe_decodes_every_frame_when_available(tmp_path: Path, seconds: int) -> None:
    # Given a padded video on disk
    target = write_blob(VideoBlob(1_000_000, seconds=seconds), tmp_path / "video.mp4")

    # When ffprobe decodes it
    probe = subprocess.run(
        [
            "ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
            "-show_entries",
            "stream=codec_name,profile,width,height,pix_fmt,nb_read_frames,duration",
            "-of", "json", str(target),
        ],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip

    # Then it sees a clean Constrained Baseline H.264 stream with every frame
    assert probe.stderr == ""
    stream = json.loads(probe.stdout)["streams"][0]
    assert (stream["codec_name"], stream["profile"]) == ("h264", "Constrained Baseline")
    assert (stream["width"], stream["height"], stream["pix_fmt"]) == (160, 96, "yuv420p")
    assert int(stream["nb_read_frames"]) == seconds * mp4.FPS
    assert float(stream["duration"]) == pytest.approx(seconds)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_ffmpeg_pixels_equal_source_when_decoded(tmp_path: Path) -> None:
    # Given a padded video of some variant on disk
    variant, seconds = 0xC0FFEE, 5
    target = write_blob(VideoBlob(2_000_000, variant=variant, seconds=seconds), tmp_path / "v.mp4")

    # When ffmpeg decodes every frame to raw 4:2:0 planes, reporting any stream error
    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-err_detect", "explode", "-i", str(target),
         "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"],
        capture_output=True, check=True, timeout=120,
    )  # fmt: skip

    # Then it decodes silently and every frame is exactly the source picture (I_PCM is lossless)
    assert decoded.stderr == b""
    frame_count = seconds * mp4.FPS
    frame_bytes = mp4.WIDTH * mp4.HEIGHT * 3 // 2
    assert len(decoded.stdout) == frame_count * frame_bytes
    for frame in range(frame_count):
        source = synthetic.render(variant, frame, frame_count)
        got = decoded.stdout[frame * frame_bytes : (frame + 1) * frame_bytes]
        assert got == source.luma + source.cb + source.cr, f"frame {frame}"
