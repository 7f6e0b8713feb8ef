"""The benchmarks' generated inputs: deterministic, well-formed, and carrying the markup they claim."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from benchmarks.wikidump import write_dump, write_jsonl


def test_the_dump_is_deterministic_well_formed_and_marked_up(tmp_path):
    a, b = tmp_path / "a.xml", tmp_path / "b.xml"
    counts = write_dump(a, 600_000, seed=3)
    write_dump(b, 600_000, seed=3)
    assert a.read_bytes() == b.read_bytes() and counts["bytes"] >= 600_000
    assert counts["redirects"] > 0 and counts["talk"] > 0 and counts["articles"] > 10
    texts = [el.text for el in ET.parse(a).getroot().iter("{http://www.mediawiki.org/xml/export-0.10/}text")]
    wikitext = "\n".join(texts)
    for markup in ("{{Infobox", "{{cite", "<ref name=", "/>", '{| class="wikitable', "bgcolor=", "colspan=", "[[File:",
                   "[[Category:", "[[de:", "== ", "'''", "&nbsp;", "<!--", "[https://", "<math>", "__TOC__", "\n* "):
        assert markup in wikitext, markup
    assert write_dump(tmp_path / "c.xml", 600_000, seed=4)["bytes"] and (tmp_path / "c.xml").read_bytes() != a.read_bytes()


def test_the_jsonl_holds_whole_articles(tmp_path):
    counts = write_jsonl(tmp_path / "a.jsonl", 300_000)
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert len(rows) == counts["records"] and len({r["id"] for r in rows}) == len(rows)
    assert all(len(r["text"].split()) >= 30 for r in rows)
