"""vp_jax.config.json_file: a workdir's JSON config read back, or an error naming the file."""
import dataclasses
import re

import pytest

from vp_jax.config.json_file import config_from_dict, lists_to_tuples, read_json_object


@dataclasses.dataclass(frozen=True)
class _Cfg:
  widths: tuple[int, ...] = (1, 2)
  name: str = "a"

  def validate(self):
    if not self.widths:
      raise ValueError("_Cfg.widths is empty.")


def test_read_json_object_returns_the_object_or_names_the_file(tmp_path):
  path = tmp_path / "cfg.json"
  path.write_text('{"widths": [3, 4], "name": "b"}')
  assert read_json_object(str(path)) == {"widths": [3, 4], "name": "b"}
  for text, message in (('{"widths": [3,', "not valid JSON"),
                        ("7", "expected a JSON object of config fields, got int.")):
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(f"{path}: {message}")):
      read_json_object(str(path))
  with pytest.raises(FileNotFoundError, match="nowhere.json"):
    read_json_object(str(tmp_path / "nowhere.json"))


def test_lists_to_tuples_converts_top_level_lists_only():
  raw = {"widths": [3, [4]], "name": "a", "nested": {"k": [1]}}
  assert lists_to_tuples(raw) == {"widths": (3, [4]), "name": "a", "nested": {"k": [1]}}
  assert raw["widths"] == [3, [4]]                      # the input is left as it was


def test_config_from_dict_restores_tuples_and_names_the_file_on_bad_fields():
  assert config_from_dict(_Cfg, {"widths": [3, 4]}, "p.json") == _Cfg(widths=(3, 4))
  assert config_from_dict(_Cfg, {}, "p.json") == _Cfg()
  built = config_from_dict(_Cfg, {"name": "x"}, "p.json", build=lambda d: _Cfg(name=d["name"] * 2))
  assert built == _Cfg(name="xx")
  with pytest.raises(ValueError, match=re.escape("p.json: unknown _Cfg fields ['depth', 'w']")):
    config_from_dict(_Cfg, {"w": 1, "depth": 2, "name": "c"}, "p.json")
  with pytest.raises(ValueError, match=re.escape("p.json: not a valid _Cfg: _Cfg.widths is empty")):
    config_from_dict(_Cfg, {"widths": []}, "p.json")
