"""configfile: strict YAML to pydantic, with every problem placed at file, line and field."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from siaga_core.configfile import load_yaml, validate_data
from siaga_core.errors import ConfigFileError, Problem
from siaga_core.yamlfile import Loc, read_yaml


class Server(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    host: str
    port: int = Field(ge=1, le=65535)


class Settings(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    name: str
    servers: list[Server] = Field(default_factory=list)
    http: Server | None = None


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "siaga.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(ConfigFileError) as caught:
        load_yaml(path, Settings)
    return caught.value.problems


def test_a_valid_file_loads_into_the_model(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nservers:\n  - host: a\n    port: 1883\n")
    assert load_yaml(path, Settings) == Settings(name="x", servers=[Server(host="a", port=1883)])


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "nope.yaml") == [Problem("file", "not found")]


def test_a_directory_is_a_config_error(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path)
    assert problem.message.startswith("cannot be read")


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"name: \xff\n")
    assert problems_of(path) == [Problem("file", "not UTF-8 text (byte 6)")]


def test_a_yaml_syntax_error_names_its_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nservers: [a, b\n")
    [problem] = problems_of(path)
    assert problem.place == "YAML syntax"
    assert problem.line == 3
    assert "column 1" in problem.message
    assert "flow sequence that starts at line 2" in problem.message


def test_unsafe_tags_are_refused(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, "name: !!python/object:os.system x\n"))
    assert "could not determine a constructor" in problem.message


def test_several_documents_are_refused(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, "name: a\n---\nname: b\n"))
    assert "expected a single document" in problem.message
    assert problem.line == 2


@pytest.mark.parametrize(("text", "kind"), [("- a\n", "a list"), ("just text\n", "a string")])
def test_a_top_level_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str, kind: str) -> None:
    assert problems_of(write(tmp_path, text)) == [
        Problem("top level", f"must be a mapping (key: value lines), not {kind}", 1)
    ]


def test_an_empty_file_is_an_empty_mapping(tmp_path: Path) -> None:
    assert read_yaml(write(tmp_path, "# only a comment\n")).data == {}
    assert problems_of(write(tmp_path, "")) == [Problem("name", "required, but missing")]


def test_duplicate_keys_are_refused_at_the_second_one(tmp_path: Path) -> None:
    path = write(tmp_path, "name: a\nservers:\n  - host: a\n    port: 1\n    host: b\nname: c\n")
    assert problems_of(path) == [
        Problem("servers[0].host", "duplicate key (first at line 3)", 5),
        Problem("name", "duplicate key (first at line 1)", 6),
    ]


def test_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    text = "name: x\nservers:\n  - &a {host: a, port: 1}\n  - <<: *a\n    port: 2\n"
    assert load_yaml(write(tmp_path, text), Settings).servers[1] == Server(host="a", port=2)


def test_str_renders_one_line_per_problem_as_file_line_place_message(tmp_path: Path) -> None:
    path = write(
        tmp_path, "name: x\nservers:\n  - host: a\n    port: 0\n  - host: 7\n    port: 1\n"
    )
    with pytest.raises(ConfigFileError) as caught:
        load_yaml(path, Settings)
    assert str(caught.value).splitlines() == [
        f"{path}:4: servers[0].port: must be >= 1 (got 0)",
        f"{path}:5: servers[1].host: must be a string, not an integer (put it in quotes)",
    ]


def test_a_missing_field_is_placed_at_its_parent(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nservers:\n  - host: a\n")
    assert problems_of(path) == [Problem("servers[0].port", "required, but missing", 3)]


def test_an_unknown_key_suggests_the_closest_allowed_one(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nhttp:\n  host: a\n  prot: 80\n")
    assert Problem(
        "http.prot", "unknown key (did you mean port? expected one of host, port)", 4
    ) in problems_of(path)


def test_an_unknown_top_level_key_lists_the_allowed_ones(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, "name: x\nzzz: 1\n"))
    assert problem == Problem("zzz", "unknown key (expected one of name, servers, http)", 2)


def test_a_wrong_container_type_says_what_is_expected(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, "name: x\nservers: {host: a}\n"))
    assert problem == Problem("servers", "must be a list (- item lines), not a mapping", 2)


def test_values_from_the_environment_are_placed_at_their_variable(tmp_path: Path) -> None:
    document = read_yaml(write(tmp_path, "name: x\nhttp:\n  host: a\n  port: 80\n"))
    data = {**document.data, "http": {"host": "a", "port": 0}}
    sources: dict[Loc, str] = {("http", "port"): "environment SIAGA_HTTP_PORT"}
    with pytest.raises(ConfigFileError) as caught:
        validate_data(data, Settings, document.path, document.node, sources)
    assert caught.value.problems == [Problem("environment SIAGA_HTTP_PORT", "must be >= 1 (got 0)")]
    assert (
        str(caught.value) == f"{document.path}: environment SIAGA_HTTP_PORT: must be >= 1 (got 0)"
    )


def test_semantic_checks_run_on_a_valid_model_and_are_placed(tmp_path: Path) -> None:
    def unique_hosts(settings: Settings) -> Iterator[tuple[Loc, str]]:
        seen = set()
        for index, server in enumerate(settings.servers):
            if server.host in seen:
                yield ("servers", index, "host"), "duplicate host"
            seen.add(server.host)

    path = write(tmp_path, "name: x\nservers:\n- {host: a, port: 1}\n- {host: a, port: 2}\n")
    with pytest.raises(ConfigFileError) as caught:
        load_yaml(path, Settings, check=unique_hosts)
    assert caught.value.problems == [Problem("servers[1].host", "duplicate host", 4)]


def test_config_error_without_a_path_renders_place_and_message() -> None:
    assert str(ConfigFileError(None, [Problem("name", "required, but missing")])) == (
        "name: required, but missing"
    )


# --- the fast path: libyaml, one list item's nodes at a time --------------------------


FAST_PATH_FILES = {
    "lists of mappings": "name: x\nservers:\n  - {host: a, port: 1}\n  - host: b\n    port: 2\n",
    "anchors and merge keys": (
        "base: &base {host: a, port: 1}\nname: x\n"
        "servers:\n  - *base\n  - <<: *base\n    port: 2\n"
    ),
    "scalars of every kind": "a: 1\nb: 1.5\nc: true\nd: null\ne: 2020-01-01\nf: 'x: y'\n",
    "an anchored list": "l: &l [1, 2]\nm: *l\n",
    "nested lists": "devices:\n  - [1, [2, 3]]\n  - {a: [4]}\n",
}


@pytest.mark.parametrize("text", FAST_PATH_FILES.values(), ids=FAST_PATH_FILES.keys())
def test_the_fast_path_reads_what_pyyaml_reads(tmp_path: Path, text: str) -> None:
    import yaml

    assert read_yaml(write(tmp_path, text)).data == yaml.safe_load(text)


def test_a_valid_file_composes_no_node_tree(tmp_path: Path) -> None:
    # The node tree (ten times the data's memory) is composed only to place an error.
    path = write(tmp_path, "name: x\nservers:\n  - {host: a, port: 1}\n")
    document = read_yaml(path)
    assert load_yaml(path, Settings).servers[0].host == "a"
    assert "node" not in vars(document)
    assert document.node is not None and document.node.start_mark.line == 0


def test_an_error_in_the_hundredth_item_is_still_placed_at_its_line(tmp_path: Path) -> None:
    items = "".join(f"  - host: h{i}\n    port: {70000 if i == 99 else i + 1}\n"
                    for i in range(100))
    path = write(tmp_path, f"name: x\nservers:\n{items}")
    assert problems_of(path) == [Problem("servers[99].port", "must be <= 65535 (got 70000)", 202)]


def test_a_duplicate_key_inside_a_list_item_is_found_by_either_path(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nservers:\n  - host: a\n    host: b\n    port: 1\n")
    assert [p.line for p in problems_of(path)] == [4]


def test_a_tagged_top_level_is_judged_as_pyyaml_judges_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="python/object"):
        read_yaml(write(tmp_path, "!!python/object:os.system {a: 1}\n"))


def test_a_tab_after_a_colon_is_refused_as_pyyaml_refuses_it(tmp_path: Path) -> None:
    # libyaml alone would take it: the fast path leaves files with tabs to PyYAML.
    with pytest.raises(ConfigFileError, match="tab"):
        load_yaml(write(tmp_path, "name: x\nservers:\n  - {host: a, port:\t1}\n"), Settings)
