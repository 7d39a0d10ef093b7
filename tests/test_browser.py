"""The web page in a real headless Chromium (Debian's, driven by Playwright): load it, click an
indexed item, see k neighbour thumbnails with distances and bits, change k and the mode, upload a
picture, list the near-duplicate groups, and save screenshots. Skipped with the reason when Chromium or Playwright is missing
(CI: `apt-get install -y chromium` and `pip install playwright`; never `playwright install`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from serving import Server, small_store

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "") if p and Path(p).is_file()), None)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    images, store = small_store(tmp_path_factory)
    with Server(store) as running:
        yield running, sync_api, images


@pytest.fixture
def page(server, tmp_path):
    running, sync_api, _ = server
    with sync_api.sync_playwright() as playwright:
        # launch_persistent_context: a fresh --user-data-dir of our own, in the test's tmp dir
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(TIMEOUT_MS)
        tab = context.pages[0] if context.pages else context.new_page()
        problems: list[str] = []
        tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        tab.on("console", lambda message: problems.append(f"console {message.type}: {message.text}") if message.type == "error" else None)
        tab.goto(running.url + "/")
        tab.wait_for_selector("#browse button")
        yield tab, problems
        context.close()


def test_first_load_shows_no_query_box(page, tmp_path):
    tab, problems = page
    tab.wait_for_function("[...document.querySelectorAll('#browse img')].every(img => img.complete && img.naturalWidth > 0)")
    assert not tab.locator("#query").is_visible() and not tab.locator("#qimg").is_visible()  # `hidden` wins over display:grid
    assert tab.locator("#emptyState").is_visible()
    tab.screenshot(path=str(tmp_path / "first-load.png"), full_page=True)
    assert not problems, problems


def test_click_an_item_and_see_its_neighbours(page, tmp_path):
    tab, problems = page
    first = tab.locator("#browse button").first
    item_id = first.get_attribute("data-id")
    first.click()
    tab.wait_for_function("document.querySelectorAll('#results .card').length === 20")
    assert tab.locator("#qtitle").inner_text().startswith(f"Item #{item_id}")
    cards = tab.locator("#results .card")
    assert cards.first.get_attribute("data-id") == item_id  # an item is its own nearest neighbour
    assert cards.first.locator(".dist").inner_text() == "d 0"
    bits = len(tab.locator("#qbits i").all())
    assert bits >= 8 and len(cards.nth(3).locator(".bits i").all()) == bits
    tab.wait_for_function(  # every thumbnail decoded
        "[...document.querySelectorAll('#results img')].every(img => img.complete && img.naturalWidth > 0)"
    )
    first_card = cards.first
    path = tab.evaluate(f"fetch('/api/items/{item_id}').then(r => r.json()).then(item => item.path)")
    assert first_card.locator(".path").is_visible() and first_card.locator(".path").inner_text().endswith(path[-20:])
    assert first_card.locator(".path a").get_attribute("href") == f"/api/items/{item_id}/original"
    natural = tab.evaluate("document.querySelector('#results img').naturalWidth")
    assert natural == 28  # the original file's own size (Fashion-MNIST), not an enlarged model input
    tab.screenshot(path=str(tmp_path / "neighbours.png"), full_page=True)
    assert (tmp_path / "neighbours.png").stat().st_size > 10_000

    tab.select_option("#k", "5")  # fewer results, same query
    tab.wait_for_function("document.querySelectorAll('#results .card').length === 5")
    tab.locator("#modes button[data-mode=latent]").click()
    tab.wait_for_function("document.querySelector('#qmeta').textContent.includes('latent')")
    assert len(tab.locator("#results .card").all()) == 5
    assert "." in tab.locator("#results .card .dist").first.inner_text()  # float distances

    second = cards.nth(2).get_attribute("data-id")  # clicking a neighbour searches with it
    cards.nth(2).click()
    tab.wait_for_function(f"document.querySelector('#qtitle').textContent.startsWith('Item #{second}')")
    assert not problems, problems


def test_upload_a_picture(page, server, tmp_path):
    tab, problems = page
    images = sorted(server[2].rglob("*.png"))
    tab.set_input_files("#file", str(images[0]))
    tab.wait_for_function("document.querySelectorAll('#results .card').length === 20")
    assert tab.locator("#qtitle").inner_text() == f"Your picture · {images[0].name}"
    assert tab.locator("#results .card .dist").first.inner_text() == "d 0"
    tab.screenshot(path=str(tmp_path / "upload.png"), full_page=True)

    (tmp_path / "notes.txt").write_text("not a picture")
    tab.set_input_files("#file", str(tmp_path / "notes.txt"))
    tab.wait_for_selector("#error", state="visible")
    assert "not an image" in tab.locator("#error").inner_text()
    real_problems = [p for p in problems if "400" not in p]  # the refused upload logs its 400
    assert not real_problems, real_problems


def test_photos_show_as_real_thumbnails(tmp_path_factory, tmp_path):
    """A folder of colour photos: the cards show each original shrunk (colour, its proportions,
    up to 256 px), not the store's small grey model input."""
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    from serving import cli
    from test_thumbnails import PHOTOS, photo

    root = tmp_path_factory.mktemp("browser-photos")
    images, store = root / "images", root / "store"
    images.mkdir()
    for seed, (name, (width, height, colour)) in enumerate(PHOTOS.items()):
        photo(width, height, colour, seed).save(images / name)
    cli("index", images, "--store", store, "--epochs", 1, "--bits", 16, "-q")
    with Server(store) as running, sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900}
        )
        context.set_default_timeout(TIMEOUT_MS)
        tab = context.pages[0] if context.pages else context.new_page()
        tab.goto(running.url + "/")
        tab.wait_for_selector("#browse button")
        tab.locator("#browse button").first.click()
        tab.wait_for_function("document.querySelectorAll('#results .card').length === 20")
        tab.wait_for_function("[...document.querySelectorAll('#results img')].every(img => img.complete && img.naturalWidth > 0)")
        sizes = tab.evaluate("[...document.querySelectorAll('#results .card')].map(card => [card.querySelector('.path').textContent, card.querySelector('img').naturalWidth, card.querySelector('img').naturalHeight])")
        for name, width, height in sizes:
            original_width, original_height, _ = PHOTOS[name]
            scale = min(1.0, 256 / max(original_width, original_height))
            assert abs(width - original_width * scale) <= 1 and abs(height - original_height * scale) <= 1, name
        assert any(width == 256 for _, width, _ in sizes)  # the large photos came down to 256 px, sharp on the card
        assert tab.locator("#qopen").get_attribute("href").endswith("/original")
        tab.screenshot(path=str(tmp_path / "photos.png"), full_page=True)
        context.close()


def test_near_duplicates_view_lists_the_groups(page, tmp_path):
    tab, problems = page
    loose = "radius=4&codes_only=true&limit=200"
    expected = tab.evaluate(f"fetch('/api/duplicates?{loose}').then(r => r.json())")
    calibrated = tab.evaluate("fetch('/api/duplicates').then(r => r.json())")
    tab.locator("#findDups").click()  # the calibrated threshold (these 200 distinct images: no group)
    tab.wait_for_function("document.querySelector('#dupMeta').textContent.includes('Hamming ≤')")
    assert tab.locator("#dupsView").is_visible() and not tab.locator("#results").is_visible() and not tab.locator("#queryPanel").is_visible()
    assert tab.locator("#dupGroups .group").count() == calibrated["total_groups"]
    if not calibrated["total_groups"]:
        assert "No near-duplicates" in tab.locator("#dupGroups").inner_text()

    tab.fill("#dupRadius", "4")
    tab.check("#dupCodesOnly")
    tab.locator("#findDups").click()
    tab.wait_for_function("document.querySelector('#dupMeta').textContent.includes('Hamming ≤ 4, codes only')")
    assert expected["total_groups"] >= 3 and f"{expected['total_groups']} groups, {expected['grouped_items']} of 200 items" in tab.locator("#dupMeta").inner_text()
    shown = tab.evaluate("[...document.querySelectorAll('#dupGroups .group')].map(g => [...g.querySelectorAll('.member')].map(m => Number(m.dataset.id)))")
    assert shown == [[m["id"] for m in group["members"]] for group in expected["groups"]]
    first = tab.locator("#dupGroups .group").first
    assert first.locator(".how").first.inner_text() == "anchor" and first.locator(".how").nth(1).inner_text() in ("near", "exact")
    tab.wait_for_function(  # the first group's thumbnails decoded (those further down load when scrolled to)
        "[...document.querySelectorAll('#dupGroups .group:first-child img')].every(img => img.complete && img.naturalWidth > 0)"
    )
    tab.screenshot(path=str(tmp_path / "duplicates.png"), full_page=True)

    member = expected["groups"][0]["members"][1]["id"]  # a member searches with it, as a result card does
    first.locator(".member").nth(1).click()
    tab.wait_for_function(f"document.querySelector('#qtitle').textContent.startsWith('Item #{member}')")
    assert not tab.locator("#dupsView").is_visible() and tab.locator("#results").is_visible()
    tab.go_back()  # the address kept the duplicates view and its threshold
    tab.wait_for_selector("#dupsView", state="visible")
    tab.wait_for_function(f"document.querySelectorAll('#dupGroups .group').length === {len(expected['groups'])}")
    assert tab.locator("#dupRadius").input_value() == "4" and tab.locator("#dupCodesOnly").is_checked()
    assert not problems, problems
