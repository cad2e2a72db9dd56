"""Tests for m3u_proxy.hls_rewrite: URI rewriting, playlist facts and body sniffing."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple
from urllib.parse import urljoin, urlsplit

import attrs
import pytest

from m3u_proxy.hls.rewrite import (
    PlaylistInfo,
    UriKind,
    looks_like_playlist,
    playlist_info,
    rewrite_playlist,
)

CORPUS_DIR = Path(__file__).parent.parent / "corpus" / "hls"
CORPUS_FILES = sorted(CORPUS_DIR.glob("*.m3u8"))


class Ref(NamedTuple):
    """One URI in a corpus file, written down by hand as the oracle."""

    raw: str  # exactly as written: `URI="x"` / `URI=x` for attributes, the bare text for lines
    kind: UriKind
    url: str  # what it must resolve to against the case's base_url
    in_tag: bool

    @property
    def uri(self) -> str:
        """The URI itself, without attribute name or quotes."""
        if not self.in_tag:
            return self.raw
        return self.raw.split("=", 1)[1].strip('"')


def line(raw: str, kind: UriKind, url: str) -> Ref:
    """A URI on a line of its own."""
    return Ref(raw, kind, url, in_tag=False)


def attr(raw: str, kind: UriKind, url: str) -> Ref:
    """A URI in a tag attribute, `raw` being e.g. `URI="key.bin"`."""
    return Ref(raw, kind, url, in_tag=True)


class Case(NamedTuple):
    """What a corpus file must produce when rewritten against `base_url`."""

    base_url: str
    refs: tuple[Ref, ...]
    info: PlaylistInfo
    kept: tuple[str, ...] = ()  # non-http URIs that must come through untouched


MASTER = "https://origin.example.com/vod/movie-4411/"
LIVE_CDN = "https://cdn3.edge-media.example.net/live/ch12/"
FMP4 = "https://vod.example.org/assets/film-77/hls/"
AES = "http://streams.example.com/enc/show/"
LL = "https://ll.example.com/live/stream/"
IPTV = "http://iptv.example.tv:8080/live/user1/pass1/"
PATHS = "https://origin.example.com/live/ch7/"

CASES: dict[str, Case] = {
    "master_audio_iframes.m3u8": Case(
        MASTER + "master.m3u8",
        (
            attr('URI="audio/en/prog_index.m3u8"', "playlist", MASTER + "audio/en/prog_index.m3u8"),
            attr('URI="audio/es/prog_index.m3u8"', "playlist", MASTER + "audio/es/prog_index.m3u8"),
            attr(
                'URI="subtitles/en/prog_index.m3u8"',
                "playlist",
                MASTER + "subtitles/en/prog_index.m3u8",
            ),
            line("v540/prog_index.m3u8", "playlist", MASTER + "v540/prog_index.m3u8"),
            line("v1080/prog_index.m3u8", "playlist", MASTER + "v1080/prog_index.m3u8"),
            attr('URI="v540/iframe_index.m3u8"', "playlist", MASTER + "v540/iframe_index.m3u8"),
            attr('URI="v1080/iframe_index.m3u8"', "playlist", MASTER + "v1080/iframe_index.m3u8"),
        ),
        PlaylistInfo(is_master=True, target_duration=None, ended=False),
    ),
    "live_media.m3u8": Case(
        "https://origin.example.com/live/ch12/index.m3u8",
        tuple(
            line(LIVE_CDN + tail, "segment", LIVE_CDN + tail)
            for tail in (
                "seg_184467.ts?token=ab12cd34&expires=1732420000&sig=Zm9v%2Fb2Fy%3D",
                "seg_184468.ts?token=ab12cd34&expires=1732420000&sig=YmF6%2FcXV4%3D",
                "seg_184469.ts?token=ab12cd34&expires=1732420000&sig=cXV1eA%3D%3D",
                "seg_184470.ts?token=ab12cd34&expires=1732420000&sig=Y29yZ2U%3D",
            )
        ),
        PlaylistInfo(is_master=False, target_duration=6.0, ended=False),
    ),
    "fmp4_vod.m3u8": Case(
        FMP4 + "1080p.m3u8",
        (
            attr('URI="init-v1080.mp4"', "map", FMP4 + "init-v1080.mp4"),
            *(
                line(f"seg-{n}-v1080.m4s", "segment", f"{FMP4}seg-{n}-v1080.m4s")
                for n in range(1, 5)
            ),
        ),
        PlaylistInfo(is_master=False, target_duration=6.0, ended=True),
    ),
    "aes128.m3u8": Case(
        AES + "playlist.m3u8",
        (
            attr('URI="keys/key-0001.bin"', "key", AES + "keys/key-0001.bin"),
            line("enc/segment0.ts", "segment", AES + "enc/segment0.ts"),
            line("enc/segment1.ts", "segment", AES + "enc/segment1.ts"),
            attr('URI="keys/key-0002.bin?kid=2"', "key", AES + "keys/key-0002.bin?kid=2"),
            line("enc/segment2.ts", "segment", AES + "enc/segment2.ts"),
            line("clear/segment3.ts", "segment", AES + "clear/segment3.ts"),
        ),
        PlaylistInfo(is_master=False, target_duration=10.0, ended=True),
    ),
    "byterange.m3u8": Case(
        "https://media.example.org/vod/talk/index.m3u8",
        (
            attr('URI="main.mp4"', "map", "https://media.example.org/vod/talk/main.mp4"),
            *[line("main.mp4", "segment", "https://media.example.org/vod/talk/main.mp4")] * 4,
        ),
        PlaylistInfo(is_master=False, target_duration=4.0, ended=True),
    ),
    "llhls.m3u8": Case(
        LL + "2M/lowLatency.m3u8",
        (
            attr('URI="init.mp4"', "map", LL + "2M/init.mp4"),
            line("fileSequence266.mp4", "segment", LL + "2M/fileSequence266.mp4"),
            line("fileSequence267.mp4", "segment", LL + "2M/fileSequence267.mp4"),
            attr('URI="filePart268.0.mp4"', "part", LL + "2M/filePart268.0.mp4"),
            attr('URI="filePart268.1.mp4"', "part", LL + "2M/filePart268.1.mp4"),
            attr('URI="filePart268.2.mp4"', "part", LL + "2M/filePart268.2.mp4"),
            line("fileSequence268.mp4", "segment", LL + "2M/fileSequence268.mp4"),
            attr('URI="filePart269.0.mp4"', "part", LL + "2M/filePart269.0.mp4"),
            attr('URI="filePart269.1.mp4"', "part", LL + "2M/filePart269.1.mp4"),
            attr('URI="filePart269.2.mp4"', "hint", LL + "2M/filePart269.2.mp4"),
            attr('URI="init-next.mp4"', "map", LL + "2M/init-next.mp4"),
            attr('URI="../1M/lowLatency.m3u8"', "playlist", LL + "1M/lowLatency.m3u8"),
            attr('URI="../4M/lowLatency.m3u8"', "playlist", LL + "4M/lowLatency.m3u8"),
        ),
        PlaylistInfo(is_master=False, target_duration=4.0, ended=False),
    ),
    "crlf.m3u8": Case(
        IPTV + "88.m3u8",
        tuple(line(f"{n}.ts", "segment", f"{IPTV}{n}.ts") for n in (88231, 88232, 88233)),
        PlaylistInfo(is_master=False, target_duration=10.0, ended=False),
    ),
    "bom.m3u8": Case(
        "https://tv.example.com/ch/5/master.m3u8",
        (
            line("sd/stream.m3u8", "playlist", "https://tv.example.com/ch/5/sd/stream.m3u8"),
            line("hd/stream.m3u8", "playlist", "https://tv.example.com/ch/5/hd/stream.m3u8"),
        ),
        PlaylistInfo(is_master=True, target_duration=None, ended=False),
    ),
    "unquoted_uri.m3u8": Case(
        "https://live.example.com/ch7/media.m3u8",
        (
            attr(
                "URI=https://keyserver.example.com/k/5012?channel=7",
                "key",
                "https://keyserver.example.com/k/5012?channel=7",
            ),
            attr("URI=init_7.mp4", "map", "https://live.example.com/ch7/init_7.mp4"),
            *(
                line(f"chunk_{n}.m4s", "segment", f"https://live.example.com/ch7/chunk_{n}.m4s")
                for n in (5012, 5013, 5014)
            ),
        ),
        PlaylistInfo(is_master=False, target_duration=8.0, ended=False),
    ),
    "session_master.m3u8": Case(
        "https://origin.example.com/news/00012/master.m3u8",
        (
            attr(
                'SERVER-URI="/steering?video=00012"',
                "other",
                "https://origin.example.com/steering?video=00012",
            ),
            attr(
                'URI="https://drm.example.com/license/key?asset=00012"',
                "key",
                "https://drm.example.com/license/key?asset=00012",
            ),
            attr(
                'URI="meta/chapters.json"',
                "other",
                "https://origin.example.com/news/00012/meta/chapters.json",
            ),
            line(
                "low/index.m3u8", "playlist", "https://origin.example.com/news/00012/low/index.m3u8"
            ),
            line(
                "mid/index.m3u8", "playlist", "https://origin.example.com/news/00012/mid/index.m3u8"
            ),
        ),
        PlaylistInfo(is_master=True, target_duration=None, ended=False),
    ),
    "path_forms.m3u8": Case(
        PATHS + "hd/index.m3u8",
        (
            attr('URI="../keys/k1.bin"', "key", PATHS + "keys/k1.bin"),
            line(
                "/segments/ch7/100.ts", "segment", "https://origin.example.com/segments/ch7/100.ts"
            ),
            line("../sd/101.ts", "segment", PATHS + "sd/101.ts"),
            line("../../shared/102.ts", "segment", "https://origin.example.com/live/shared/102.ts"),
            line("./103.ts", "segment", PATHS + "hd/103.ts"),
            line("//cdn2.example.net/ch7/104.ts", "segment", "https://cdn2.example.net/ch7/104.ts"),
            line("105%20final.ts?a=1&b=%2F", "segment", PATHS + "hd/105%20final.ts?a=1&b=%2F"),
        ),
        PlaylistInfo(is_master=False, target_duration=5.0, ended=False),
    ),
    "data_key.m3u8": Case(
        "https://origin.example.com/vod/secure/index.m3u8",
        tuple(
            line(name, "segment", f"https://origin.example.com/vod/secure/{name}")
            for name in ("seg_a.ts", "seg_b.ts", "seg_c.ts")
        ),
        PlaylistInfo(is_master=False, target_duration=6.0, ended=True),
        kept=('"data:text/plain;base64,MDEyMzQ1Njc4OWFiY2RlZg=="', '"skd://key65?asset=12"'),
    ),
}


class Recorder:
    """A make_uri that hands out unique tokens and remembers what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, UriKind]] = []

    def __call__(self, url: str, kind: UriKind) -> str:
        token = f"/proxied/{len(self.calls)}/{kind}"
        self.calls.append((url, kind))
        return token


def read_corpus(path: Path) -> str:
    """Read a corpus file without newline translation, so CRLF and BOM stay visible."""
    return path.read_bytes().decode("utf-8")


UPSTREAM = "https://up.example.com/a/b/index.m3u8"


def rewrite(text: str, base_url: str = UPSTREAM) -> tuple[str, Recorder]:
    """Rewrite `text` with a fresh Recorder and return the output and the recorder."""
    recorder = Recorder()
    return rewrite_playlist(text, base_url, recorder), recorder


@pytest.fixture(params=CORPUS_FILES, ids=lambda p: p.name)
def corpus_path(request: pytest.FixtureRequest) -> Path:
    """Each playlist in the corpus in turn."""
    path: Path = request.param
    return path


class TestCorpus:
    """Every corpus playlist is rewritten completely and otherwise left byte-identical."""

    def test_every_corpus_file_has_an_oracle(self) -> None:
        """The hand-written expectations cover exactly the files in the corpus directory."""
        assert {p.name for p in CORPUS_FILES} == set(CASES)

    def test_oracle_uris_are_in_the_file(self, corpus_path: Path) -> None:
        """Every URI listed in the oracle is really written that way in the corpus file."""
        text = read_corpus(corpus_path)
        for ref in CASES[corpus_path.name].refs:
            assert ref.raw in text

    def test_only_uris_change(self, corpus_path: Path) -> None:
        """Putting the original URIs back where the tokens are gives the input byte for byte."""
        original = read_corpus(corpus_path)
        case = CASES[corpus_path.name]
        output, recorder = rewrite(original, case.base_url)
        assert len(recorder.calls) == len(case.refs)
        rebuilt = output
        for index, ((_, kind), ref) in enumerate(zip(recorder.calls, case.refs, strict=True)):
            token = f"/proxied/{index}/{kind}"
            if ref.in_tag:
                attr_name = ref.raw.split("=", 1)[0]
                written = f'{attr_name}="{token}"'  # replacements in tags are always quoted
            else:
                written = token
            assert rebuilt.count(written) == 1
            rebuilt = rebuilt.replace(written, ref.raw)
        assert rebuilt == original

    def test_no_upstream_uri_or_host_survives(self, corpus_path: Path) -> None:
        """Neither the original URI text nor any upstream host name is left in the output."""
        case = CASES[corpus_path.name]
        output, _ = rewrite(read_corpus(corpus_path), case.base_url)
        hosts = {urlsplit(url).hostname for url in (case.base_url, *(r.url for r in case.refs))}
        for host in hosts:
            assert host
            assert host not in output
        for ref in case.refs:
            assert ref.uri not in output

    def test_kinds_and_absolute_urls(self, corpus_path: Path) -> None:
        """make_uri is called once per URI, in order, with the resolved URL and the right kind."""
        case = CASES[corpus_path.name]
        _, recorder = rewrite(read_corpus(corpus_path), case.base_url)
        assert recorder.calls == [(ref.url, ref.kind) for ref in case.refs]

    def test_non_http_uris_survive(self, corpus_path: Path) -> None:
        """URIs that are not http(s) stay as written and are never handed to make_uri."""
        original = read_corpus(corpus_path)
        case = CASES[corpus_path.name]
        output, recorder = rewrite(original, case.base_url)
        for kept in case.kept:
            assert output.count(kept) == original.count(kept) == 1
        assert all(urlsplit(url).scheme in {"http", "https"} for url, _ in recorder.calls)

    def test_line_structure_is_preserved(self, corpus_path: Path) -> None:
        """The output has the same line terminators, in the same order, and the same BOM."""
        original = read_corpus(corpus_path)
        output, _ = rewrite(original, CASES[corpus_path.name].base_url)
        assert output.count("\r\n") == original.count("\r\n")
        assert output.count("\n") == original.count("\n")
        assert output.startswith("\ufeff") == original.startswith("\ufeff")
        assert output.endswith("\n") == original.endswith("\n")

    def test_playlist_info(self, corpus_path: Path) -> None:
        """playlist_info reports the master flag, target duration and end state of each file."""
        assert playlist_info(read_corpus(corpus_path)) == CASES[corpus_path.name].info

    def test_looks_like_playlist(self, corpus_path: Path) -> None:
        """Every corpus file, BOM or not, is recognised as a playlist from its raw bytes."""
        assert looks_like_playlist(corpus_path.read_bytes())

    def test_corpus_has_the_special_shapes(self) -> None:
        """The corpus really contains CRLF endings, a BOM and a file without a final newline."""
        texts = {p.name: read_corpus(p) for p in CORPUS_FILES}
        assert texts["crlf.m3u8"].count("\r\n") == texts["crlf.m3u8"].count("\n") > 0
        assert texts["bom.m3u8"].startswith("\ufeff#EXTM3U")
        assert not texts["live_media.m3u8"].endswith("\n")


class TestResolution:
    """Relative URIs are resolved against the final (post-redirect) playlist URL."""

    def test_redirected_base_changes_resolution(self) -> None:
        """The same playlist served from a redirect target resolves against that target."""
        text = read_corpus(CORPUS_DIR / "path_forms.m3u8")
        edge = "http://edge7.example.net:8081/r/"
        _, recorder = rewrite(text, edge + "abc/index.m3u8")
        assert [url for url, _ in recorder.calls] == [
            edge + "keys/k1.bin",
            "http://edge7.example.net:8081/segments/ch7/100.ts",
            edge + "sd/101.ts",
            "http://edge7.example.net:8081/shared/102.ts",
            edge + "abc/103.ts",
            "http://cdn2.example.net/ch7/104.ts",
            edge + "abc/105%20final.ts?a=1&b=%2F",
        ]

    def test_base_query_is_not_inherited(self) -> None:
        """A token in the playlist URL's query does not leak onto relative segment URLs."""
        _, recorder = rewrite("#EXTM3U\n#EXTINF:4,\nseg.ts\n", "https://h.example/a/i.m3u8?tok=1")
        assert recorder.calls == [("https://h.example/a/seg.ts", "segment")]

    def test_dot_segments_above_root_are_clamped(self) -> None:
        """Too many `../` segments resolve to the host root instead of escaping it."""
        _, recorder = rewrite("#EXTM3U\n../../../../x.ts\n", "https://h.example/a/i.m3u8")
        assert recorder.calls == [("https://h.example/x.ts", "segment")]

    def test_percent_encoding_is_kept(self) -> None:
        """Percent-escapes reach make_uri exactly as written, neither decoded nor doubled."""
        _, recorder = rewrite("#EXTM3U\nx%2Fy%20z.ts?q=%3D\n", "https://h.example/a/i.m3u8")
        assert recorder.calls == [("https://h.example/a/x%2Fy%20z.ts?q=%3D", "segment")]


JOIN_BASES = [
    "https://h.example/a/b/i.m3u8",
    "http://h.example:8080/a//b/./c/../i.m3u8?tok=1#f",
    "https://h.example",
    "https://h.example/a;p=1/i.m3u8;q=2",
    "HTTPS://H.example/A/i.m3u8",
    "https://user:pw@h.example/x/",
    "ftp://h.example/a/i.m3u8",
]
JOIN_URIS = [
    "seg.ts",
    "a/b/seg.ts?x=1&y=%2F",
    "seg.ts?",
    "seg.ts#",
    "seg.ts#t=10",
    "seg.ts?t=1:2#f#g",
    "a//b.ts",
    "./a.ts",
    "a/./b.ts",
    "a/../b.ts",
    "..",
    ".",
    "...ts",
    "..a/b..",
    ".hidden/x",
    "seg;jsessionid=1.ts",
    "seg.ts;",
    "a;b/c.ts",
    "%2e%2e/x.ts",
    "seg\u3000.ts",
    "/abs.ts",
    "//other.example/x.ts",
    "?only=query",
    "#frag",
    "x:y.ts",
    "C:/x.ts",
    "http:x.ts",
    "https:/x.ts",
    "https://cdn.example/a/../b//c.ts?x",
    "https://cdn.example",
    "https://cdn.example?x=1",
    "https://cdn.example/a.ts?",
    "https://cdn.example/a;p.ts",
    "https://cdn.example/a.ts;",
    "HTTPS://CDN.example/x.ts",
    "http://[::1]:8080/x.ts",
    "http://h\u00e9.example/x.ts",
    "https://cdn.example/\u00e9/x.ts",
    "https://u:p@cdn.example:443/x.ts#t",
]


class TestResolutionMatchesUrljoin:
    """Whatever shortcuts the resolver takes, the URL handed out is exactly urljoin's."""

    @pytest.mark.parametrize("uri", JOIN_URIS)
    def test_attribute_uri(self, uri: str) -> None:
        """A URI attribute resolves to urljoin(base, uri), or is left alone if that is not http."""
        for base in JOIN_BASES:
            expected = urljoin(base, uri)
            text = f'#EXT-X-MAP:URI="{uri}"\n'
            output, recorder = rewrite(text, base)
            if expected.lower().startswith(("http://", "https://")):
                assert recorder.calls == [(expected, "map")], base
            else:
                assert (output, recorder.calls) == (text, []), base

    @pytest.mark.parametrize("uri", [u for u in JOIN_URIS if not u.startswith("#")])
    def test_uri_line(self, uri: str) -> None:
        """A URI line resolves to urljoin(base, uri), or is left alone if that is not http."""
        for base in JOIN_BASES:
            expected = urljoin(base, uri)
            text = f"#EXTM3U\n{uri}\n"
            output, recorder = rewrite(text, base)
            if expected.lower().startswith(("http://", "https://")):
                assert recorder.calls == [(expected, "segment")], base
            else:
                assert (output, recorder.calls) == (text, []), base

    def test_unparseable_uri_is_left_alone(self) -> None:
        """A URI urljoin rejects (unbalanced IPv6 bracket) is kept as is instead of raising."""
        text = '#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI="http://[::1/k"\nhttp://[::1/seg.ts\n'
        output, recorder = rewrite(text)
        assert output == text
        assert recorder.calls == []


class TestRewritePlaylist:
    """Unit behaviour of rewrite_playlist on small hand-made playlists."""

    def test_quoted_commas_do_not_split_attributes(self) -> None:
        """A comma inside a quoted CODECS value does not confuse the attribute tokenizer."""
        text = '#EXT-X-I-FRAME-STREAM-INF:CODECS="avc1.4d401f,mp4a.40.2",URI="i.m3u8",BANDWIDTH=9\n'
        output, recorder = rewrite(text)
        assert output == (
            '#EXT-X-I-FRAME-STREAM-INF:CODECS="avc1.4d401f,mp4a.40.2",'
            'URI="/proxied/0/playlist",BANDWIDTH=9\n'
        )
        assert recorder.calls == [("https://up.example.com/a/b/i.m3u8", "playlist")]

    def test_uri_text_inside_another_value_is_ignored(self) -> None:
        """`URI=` appearing inside a quoted value of another attribute is not treated as the URI."""
        text = '#EXT-X-SESSION-DATA:DATA-ID="n",VALUE="see URI=fake.json, ok",URI="real.json"\n'
        output, recorder = rewrite(text)
        assert output == (
            '#EXT-X-SESSION-DATA:DATA-ID="n",VALUE="see URI=fake.json, ok",URI="/proxied/0/other"\n'
        )
        assert recorder.calls == [("https://up.example.com/a/b/real.json", "other")]

    def test_unquoted_uri_is_written_quoted(self) -> None:
        """An unquoted URI attribute becomes a quoted one and its neighbours are untouched."""
        output, _ = rewrite("#EXT-X-KEY:METHOD=AES-128,URI=k.bin,IV=0x01\n")
        assert output == '#EXT-X-KEY:METHOD=AES-128,URI="/proxied/0/key",IV=0x01\n'

    def test_spaces_between_attributes_are_kept(self) -> None:
        """Whitespace after commas in an attribute list survives the rewrite."""
        output, _ = rewrite('#EXT-X-MAP:BYTERANGE="10@0", URI="init.mp4" \n')
        assert output == '#EXT-X-MAP:BYTERANGE="10@0", URI="/proxied/0/map" \n'

    def test_method_none_key_is_untouched(self) -> None:
        """EXT-X-KEY:METHOD=NONE has no URI and is neither changed nor reported."""
        text = "#EXTM3U\n#EXT-X-KEY:METHOD=NONE\n"
        output, recorder = rewrite(text)
        assert output == text
        assert recorder.calls == []

    @pytest.mark.parametrize(
        ("hint", "kind"),
        [
            ('#EXT-X-PRELOAD-HINT:TYPE=PART,URI="p.mp4"', "hint"),
            ('#EXT-X-PRELOAD-HINT:TYPE=MAP,URI="p.mp4"', "map"),
            ('#EXT-X-PRELOAD-HINT:URI="p.mp4",TYPE=MAP,BYTERANGE-START=0', "map"),
        ],
    )
    def test_preload_hint_kind_follows_type(self, hint: str, kind: UriKind) -> None:
        """A preload hint is a hint for TYPE=PART and a map for TYPE=MAP, wherever TYPE sits."""
        _, recorder = rewrite(hint + "\n")
        assert recorder.calls == [("https://up.example.com/a/b/p.mp4", kind)]

    @pytest.mark.parametrize(
        "text",
        [
            '#ext-x-key:METHOD=AES-128,URI="k.bin"\n',
            '#EXT-X-KEYS:URI="k.bin"\n',
            "#EXT-X-PART-INF:PART-TARGET=1.0\n",
            '#EXT-X-DATERANGE:ID="ad",START-DATE="2024-11-24T00:00:00Z",X-URI="k.bin"\n',
            "# k.bin is a comment, not a URI\n",
        ],
    )
    def test_unknown_or_miscased_tags_are_untouched(self, text: str) -> None:
        """Tag names match case-sensitively and exactly; anything else is left alone."""
        output, recorder = rewrite(text)
        assert output == text
        assert recorder.calls == []

    def test_stream_inf_uri_after_intervening_lines(self) -> None:
        """The URI following EXT-X-STREAM-INF is a playlist even after comments and blank lines."""
        text = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n# note\n\nv.m3u8\nseg.ts\n"
        _, recorder = rewrite(text)
        assert [kind for _, kind in recorder.calls] == ["playlist", "segment"]

    def test_whitespace_around_uri_line_is_kept(self) -> None:
        """Leading and trailing whitespace on a URI line stays around the replacement."""
        output, recorder = rewrite("#EXTM3U\n  seg.ts \t\r\n")
        assert output == "#EXTM3U\n  /proxied/0/segment \t\r\n"
        assert recorder.calls == [("https://up.example.com/a/b/seg.ts", "segment")]

    def test_mixed_line_endings_are_kept(self) -> None:
        """Each line keeps its own LF, CRLF or CR terminator."""
        text = "#EXTM3U\r\n#EXTINF:4,\na.ts\r\n#EXTINF:4,\rb.ts\n#EXTINF:4,\r\nc.ts"
        output, recorder = rewrite(text)
        assert output == (
            "#EXTM3U\r\n#EXTINF:4,\n/proxied/0/segment\r\n#EXTINF:4,\r"
            "/proxied/1/segment\n#EXTINF:4,\r\n/proxied/2/segment"
        )
        assert len(recorder.calls) == 3

    def test_bom_is_kept(self) -> None:
        """A leading BOM stays in front of #EXTM3U."""
        output, _ = rewrite("\ufeff#EXTM3U\nseg.ts\n")
        assert output == "\ufeff#EXTM3U\n/proxied/0/segment\n"

    @pytest.mark.parametrize(
        "uri",
        ["rtmp://media.example.com/live/x", "skd://key1", "data:video/mp2t;base64,R0A="],
    )
    def test_non_http_uri_line_is_untouched(self, uri: str) -> None:
        """A segment line with a non-http scheme is not rewritten and not reported."""
        text = f"#EXTM3U\n#EXTINF:4,\n{uri}\n"
        output, recorder = rewrite(text)
        assert output == text
        assert recorder.calls == []

    def test_uppercase_http_scheme_is_rewritten(self) -> None:
        """An upper-case HTTP scheme still counts as http and is rewritten."""
        output, recorder = rewrite("#EXTM3U\nHTTP://H.example/x.ts\n")
        assert output == "#EXTM3U\n/proxied/0/segment\n"
        assert len(recorder.calls) == 1

    def test_unterminated_quote_is_still_rewritten(self) -> None:
        """A URI attribute with a missing closing quote is replaced rather than leaking upstream."""
        output, recorder = rewrite('#EXT-X-MAP:URI="init.mp4\n')
        assert output == '#EXT-X-MAP:URI="/proxied/0/map"\n'
        assert recorder.calls == [("https://up.example.com/a/b/init.mp4", "map")]

    def test_empty_text(self) -> None:
        """An empty body stays empty and nothing is reported."""
        output, recorder = rewrite("")
        assert output == ""
        assert recorder.calls == []

    def test_large_media_playlist(self) -> None:
        """A 5,000-segment playlist has every segment rewritten in order."""
        body = "".join(f"#EXTINF:2.0,\nseg{n}.ts\n" for n in range(5000))
        output, recorder = rewrite("#EXTM3U\n#EXT-X-TARGETDURATION:2\n" + body)
        assert len(recorder.calls) == 5000
        assert recorder.calls[4999] == ("https://up.example.com/a/b/seg4999.ts", "segment")
        assert ".ts" not in output


class TestPlaylistInfo:
    """playlist_info extracts the master flag, target duration and end state."""

    def test_media_playlist_with_media_tag_is_not_master(self) -> None:
        """A playlist with EXTINF lines is a media playlist even if it carries master tags."""
        text = '#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="x"\n#EXTINF:4,\na.ts\n'
        assert not playlist_info(text).is_master

    def test_media_tag_alone_makes_master(self) -> None:
        """An EXT-X-MEDIA tag without EXTINF marks a master playlist."""
        text = '#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="x",URI="a.m3u8"\n'
        assert playlist_info(text).is_master

    def test_empty_playlist(self) -> None:
        """A bare header is neither master nor ended and has no target duration."""
        assert playlist_info("#EXTM3U\n") == PlaylistInfo(
            is_master=False, target_duration=None, ended=False
        )

    @pytest.mark.parametrize(
        ("value", "expected"),
        [("6", 6.0), ("2.5", 2.5), (" 10 ", 10.0), ("abc", None), ("nan", None), ("", None)],
    )
    def test_target_duration_parsing(self, value: str, expected: float | None) -> None:
        """The target duration is read as a number and garbage yields None."""
        info = playlist_info(f"#EXTM3U\n#EXT-X-TARGETDURATION:{value}\n")
        assert info.target_duration == expected

    def test_crlf_and_bom(self) -> None:
        """CRLF line ends and a BOM do not hide the tags."""
        info = playlist_info("\ufeff#EXTM3U\r\n#EXT-X-TARGETDURATION:4\r\n#EXT-X-ENDLIST\r\n")
        assert info == PlaylistInfo(is_master=False, target_duration=4.0, ended=True)

    def test_tag_names_are_case_sensitive(self) -> None:
        """A lower-case end tag is a comment and does not end the playlist."""
        assert not playlist_info("#EXTM3U\n#ext-x-endlist\n").ended

    def test_info_is_frozen(self) -> None:
        """PlaylistInfo instances cannot be modified."""
        info = playlist_info("#EXTM3U\n")
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            info.ended = True  # type: ignore[misc]


class TestLooksLikePlaylist:
    """looks_like_playlist sniffs the start of a response body."""

    @pytest.mark.parametrize(
        "body",
        [
            b"#EXTM3U\n",
            b"#EXTM3U",
            b"\xef\xbb\xbf#EXTM3U\r\n",
            b"  \r\n\t#EXTM3U\n",
            b"\n\xef\xbb\xbf #EXTM3U\n",
        ],
    )
    def test_playlists(self, body: bytes) -> None:
        """A body starting with #EXTM3U after optional BOM and whitespace is a playlist."""
        assert looks_like_playlist(body)

    @pytest.mark.parametrize(
        "body",
        [
            b"",
            b"\xef\xbb\xbf",
            b"#EXTINF:4,\nseg.ts\n",
            b"#extm3u\n",
            b"<html><body>#EXTM3U</body></html>",
            b"\x47\x40\x00\x10" + b"\xff" * 184,
            b"x#EXTM3U\n",
        ],
    )
    def test_non_playlists(self, body: bytes) -> None:
        """Bodies that do not start with #EXTM3U, including TS packets and HTML, are rejected."""
        assert not looks_like_playlist(body)

    def test_only_the_first_kilobyte_is_examined(self) -> None:
        """A #EXTM3U buried beyond the first kilobyte of whitespace is not looked for."""
        assert not looks_like_playlist(b" " * 10_000 + b"#EXTM3U\n")
