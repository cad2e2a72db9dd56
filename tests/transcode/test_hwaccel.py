"""Hardware acceleration detection from device nodes and ffmpeg's encoder list."""

from pathlib import Path

from m3u_proxy.transcode.hwaccel import detect


def node(path: Path, content: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)


class TestDetect:
    def test_nothing_found_means_disabled_and_no_arguments(self, tmp_path: Path) -> None:
        """A machine without nodes reports no acceleration and an empty {hwaccel}."""
        found = detect("h264_nvenc h264_qsv", tmp_path / "dev", tmp_path / "sys")
        assert found.public() == {"enabled": False, "type": None, "device": None, "ffmpeg_args": []}

    def test_nvidia_needs_the_device_and_the_encoder(self, tmp_path: Path) -> None:
        """/dev/nvidia0 counts only when ffmpeg was built with NVENC."""
        node(tmp_path / "dev" / "nvidia0")
        assert not detect("libx264", tmp_path / "dev", tmp_path / "sys").enabled
        assert detect("h264_nvenc", tmp_path / "dev", tmp_path / "sys").type == "nvidia"

    def test_intel_render_node_with_qsv_is_quick_sync(self, tmp_path: Path) -> None:
        """An Intel render node with ffmpeg's QSV encoder is Quick Sync."""
        node(tmp_path / "dev" / "dri" / "renderD128")
        node(tmp_path / "sys" / "renderD128" / "device" / "vendor", "0x8086\n")
        found = detect("h264_qsv", tmp_path / "dev", tmp_path / "sys")
        assert (found.type, found.ffmpeg_args) == ("qsv", ("-hwaccel", "qsv"))

    def test_other_render_nodes_are_vaapi(self, tmp_path: Path) -> None:
        """Any other render node is used through VAAPI, with its device path."""
        node(tmp_path / "dev" / "dri" / "renderD129")
        node(tmp_path / "sys" / "renderD129" / "device" / "vendor", "0x1002\n")
        found = detect("h264_qsv", tmp_path / "dev", tmp_path / "sys")
        assert found.type == "vaapi"
        assert str(found.device).endswith("renderD129")
        assert found.ffmpeg_args[-1] == found.device
