"""The explore page in a real browser: headless Chromium (Debian's chromium + chromium-driver, driven
by selenium) loads it from file://, a token is clicked, the views change, and what the page's
JavaScript computed equals what minipegx.views computes in Python -- to the page's one-byte storage.

CI installs the browser in .ci/run (apt-get install chromium chromium-driver)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

import minipegx
from minipegx import explore
from minipegx import views as V

# Every stored probability is within 2.2% (explore.quantize) and values under 1.6e-5 are stored as 0.
# A rollout row multiplies one probability per layer (3 layers: within 1.022^3 - 1 = 6.7%) and can lose
# the zeroed entries: at most (G + K) x layers x 1.6e-5 = 4e-3.
QUANT_RTOL, ROLLOUT_RTOL, ROLLOUT_ATOL = 0.022, 0.067, 4e-3


def chromium():
    browser, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (browser and driver):
        pytest.fail("the browser test needs Debian's chromium and chromium-driver: "
                    "apt-get install -y chromium chromium-driver (.ci/run does it on CI)")
    opts = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(arg)
    opts.binary_location = browser
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    doc = minipegx.example_document("short")
    doc = doc[:doc.index("Nobody remembers who built the gentle tower")]   # ~600 tokens, 2 key sentences
    model = minipegx.from_pretrained(minipegx.demo_model_path("short"))
    tok = minipegx.Tokenizer.from_pretrained(minipegx.demo_model_path("short"))
    data = explore.build(doc, model, tok)
    path = tmp_path_factory.mktemp("explore") / "page.html"
    explore.write_page(data, path)
    ids = tok([doc], return_tensors="np")["input_ids"]
    driver = chromium()
    driver.get(path.as_uri())
    yield driver, data, V.encoder_views(model, ids)
    driver.quit()


def signatures(driver):
    return driver.execute_script(
        "return ['field', 'reach', 'attn', 'text'].map(id => document.getElementById(id).dataset.signature)")


def test_clicking_a_token_selects_it_and_redraws_every_view(page):
    driver, _, _ = page
    before = signatures(driver)
    target = 117
    token = driver.find_element(By.CSS_SELECTOR, f'#text span[data-t="{target}"]')
    token.click()
    assert driver.execute_script("return document.body.dataset.query") == str(target)
    assert "q" in token.get_attribute("class").split()
    after = signatures(driver)
    assert all(b != a for b, a in zip(before, after)), (before, after)
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []


def test_the_pages_views_equal_pythons(page):
    driver, data, views = page
    q = 301
    driver.execute_script(f"explore.select({q})")
    js = driver.execute_script("const l = explore.last; return [l.struct.map(r => Array.from(r)), "
                               "l.weighted.map(r => Array.from(r)), l.attn.map(r => Array.from(r))]")
    struct, weighted, attn = (np.array(a) for a in js)
    np.testing.assert_array_equal(struct, V.reach_structure(views.config, data["T"], q))
    np.testing.assert_allclose(weighted, V.reach_weighted(views.layers, q), rtol=ROLLOUT_RTOL, atol=ROLLOUT_ATOL)
    for layer, att in enumerate(views.layers):
        want = np.concatenate(V.token_attention(att, q))
        np.testing.assert_allclose(attn[layer], np.where(want > 1.7e-5, want, 0), rtol=QUANT_RTOL, atol=1e-9)
        glob = np.array(driver.execute_script(f"return Array.from(explore.globalRow({layer}, 3))"))
        to_globals, to_tokens = V.global_reads(att)
        want = np.concatenate([to_globals[3], to_tokens[3]])
        np.testing.assert_allclose(glob, np.where(want > 1.7e-5, want, 0), rtol=QUANT_RTOL, atol=1e-9)


def test_a_summary_word_shows_the_source_sentence_its_step_read_most(page):
    driver, data, _ = page
    summary = data["summary"]
    cross = explore.unpack_rows(summary["cross"], len(summary["tokens"]))   # [S, T]
    sentence = np.zeros(data["T"], int)
    for i, (a, b) in enumerate(data["sentences"]):
        sentence[a:b] = i
    for s in (0, 3):
        mass = np.bincount(sentence, weights=cross[s], minlength=len(data["sentences"]))
        driver.find_elements(By.CSS_SELECTOR, "#summary span.s")[s].click()
        assert driver.execute_script("return document.getElementById('cross').dataset.best") == str(mass.argmax())
        driver.find_elements(By.CSS_SELECTOR, "#summary span.s")[s].click()   # unpin
    # The short demo model's first summary word is the name in the first key sentence, which it read there.
    a, b = data["keySpans"][0]
    assert tuple(data["sentences"][int(np.bincount(sentence, weights=cross[0]).argmax())]) == (a, b)
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []


def test_rows_kept_as_top_entries_read_back_at_their_columns(tmp_path):
    """Beyond the byte budget the page keeps each row's largest entries with uint16 columns: the
    JavaScript must put them where Python's unpack_rows does."""
    doc = minipegx.example_document("short")[:1500]
    data = explore.build(doc, None, summarize=False, row_budget=20_000, global_budget=5_000)
    assert "index" in data["layers"][1]["local"] and "index" in data["layers"][1]["global"]
    path = tmp_path / "small.html"
    explore.write_page(data, path)
    driver = chromium()
    try:
        driver.get(path.as_uri())
        G, K, T, q = data["G"], data["K"], data["T"], 40
        shift = data["layers"][1]["shift"]
        local = explore.unpack_rows(data["layers"][1]["local"], data["layers"][1]["blocks"] * K)
        n = (q + shift) // K
        want = np.zeros(G + T)
        want[:G] = local[q + shift, :G]
        keys = n * K + np.arange(K) - shift
        ok = (keys >= 0) & (keys < T)
        want[G + keys[ok]] = local[q + shift, G:][ok]
        got = driver.execute_script(f"return Array.from(explore.tokenAttention(1, {q}))")
        np.testing.assert_allclose(got, want, rtol=1e-12)
        glob = explore.unpack_rows(data["layers"][1]["global"], G)[2]
        want = np.concatenate([glob[:G], glob[G + shift:G + shift + T]])
        np.testing.assert_allclose(driver.execute_script("return Array.from(explore.globalRow(1, 2))"), want, rtol=1e-12)
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        driver.quit()
