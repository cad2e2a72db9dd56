"""Profile templates: what runs is what was checked, and hostile templates never run."""

import pytest

from m3u_proxy.transcode.profiles import (
    BUILT_IN,
    ProfileError,
    check_template,
    check_variables,
    expand,
    resolve,
)

EDITOR = "-i {input_url} -c:v libx264 -preset veryfast -c:a aac -f mpegts {output_args|pipe:1}"


class TestAccepted:
    @pytest.mark.parametrize("name", sorted(BUILT_IN))
    def test_every_built_in_passes_its_own_check(self, name: str) -> None:
        """Built-in profiles obey the rules they impose on others."""
        _, _, output_format = resolve(name, {})
        assert output_format == BUILT_IN[name].format

    def test_the_editor_template_is_filled_by_the_proxy(self) -> None:
        """m3u-editor's default template becomes stdin in, stdout out."""
        tokens, output_format = check_template(EDITOR, {})
        assert output_format == "mpegts"
        argv = expand(tokens, input_url="pipe:0", output_args=["pipe:1"], hwaccel=[])
        assert argv == [
            *("-i", "pipe:0", "-c:v", "libx264", "-preset", "veryfast"),
            *("-c:a", "aac", "-f", "mpegts", "pipe:1"),
        ]

    def test_variables_and_defaults_fill_placeholders(self) -> None:
        """``{name|default}`` takes the variable when given, else the default."""
        template = "-i {input_url} -b:v {bitrate|2M} -f mpegts {output_args}"
        assert "2M" in check_template(template, {})[0]
        assert "4500k" in check_template(template, {"bitrate": "4500k"})[0]

    def test_hwaccel_expands_to_several_arguments(self) -> None:
        """``{hwaccel}`` becomes the detected arguments, or nothing."""
        tokens, _ = check_template("{hwaccel} -i {input_url} -f mpegts {output_args}", {})
        assert expand(tokens, input_url="pipe:0", output_args=["pipe:1"], hwaccel=[])[0] == "-i"
        hw = ["-hwaccel", "vaapi"]
        assert expand(tokens, input_url="x", output_args=[], hwaccel=hw)[:2] == hw


class TestRefused:
    @pytest.mark.parametrize(
        ("template", "words"),
        [
            ("-i /etc/passwd -f mpegts {output_args}", "-i {input_url}"),
            ("-f lavfi -i {input_url} -f mpegts {output_args}", "input format"),
            ("-i {input_url} -f lavfi {output_args}", "output format"),
            ("-i {input_url} -f mpegts /tmp/copy.ts {output_args}", "another output"),
            ("-i {input_url} -f mpegts {output_args} -f mpegts pipe:2", "last argument"),
            ("-i {input_url} -i {input_url} -f mpegts {output_args}", "only input"),
            ("-i {input_url} -vf {evil} -f mpegts {output_args}", "unknown placeholder"),
            ("-i {input_url} -f mpegts {output_args}; rm -rf /", "shell"),
            ("-i {input_url} -f mpegts $(id) {output_args}", "shell"),
            ("-i {input_url} -f mpegts `id` {output_args}", "shell"),
            ("-i {input_url} -filter_complex movie=/etc/passwd -f mpegts {output_args}", "filter"),
            ("-i {input_url} -vf subtitles=/etc/passwd -f mpegts {output_args}", "filter"),
            ("-i {input_url} -vf drawtext=textfile=/etc/passwd -f mpegts {output_args}", "filter"),
            ("-i {input_url} -/vf /etc/passwd -f mpegts {output_args}", "not allowed"),
            ("-i {input_url} -report -f mpegts {output_args}", "not allowed"),
            ("-i {input_url} -c copy {output_args}", "output format"),
            ("-c copy -f mpegts {output_args}", "-i {input_url}"),
            ("-i {input_url} -f mpegts pipe:1", "another output"),
            ("-i {input_url} -f mpegts {output_args} '", "split"),
            ("-i {input_url} -f mpegts -{input_url} {output_args}", "misplaced"),
            ("", "non-empty"),
        ],
    )
    def test_hostile_templates_are_named_and_refused(self, template: str, words: str) -> None:
        """Each hostile template is refused with a message that names its problem."""
        with pytest.raises(ProfileError, match=None) as caught:
            resolve(template, {})
        assert words in str(caught.value)

    def test_a_template_must_be_a_string(self) -> None:
        """Non-string profiles are refused, not crashed on."""
        with pytest.raises(ProfileError):
            resolve(["-i", "{input_url}"], {})

    @pytest.mark.parametrize(
        "variables",
        [
            {"bitrate": "3M; reboot"},
            {"bitrate": "$(id)"},
            {"input_url": "/etc/passwd"},
            {"bad name": "1"},
            {"bitrate": {"nested": 1}},
            {"bitrate": True},
            [],
        ],
    )
    def test_unsafe_variables_are_refused(self, variables: object) -> None:
        """Variables cannot smuggle in shell syntax, proxy placeholders or structure."""
        with pytest.raises(ProfileError):
            check_variables(variables)
