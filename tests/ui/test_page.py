"""The page at /ui driven in headless Chromium: every view, the API-key flow, escaping, against a real server."""

from __future__ import annotations

import csv
import re

import pytest

from tests.conftest import make_folder
from tests.service.server import KEY
from tests.ui.conftest import XSS, XSS_FILE, Watch, image_b64, open_page, until

pytestmark = pytest.mark.slow


def extracted(site) -> None:
    """The shapes dataset's tiny features (a no-op when a test before did it through the page)."""
    job = site.client.post("/extract", json={"dataset": "shapes", "path": "shapes", "backbone": "tiny",
                                             "weights": "random", "split": "0.5,0.25,0.25"}).json()
    assert site.wait_job(job["job_id"])["state"] == "succeeded"


def trained(site, name: str = "shapes-mlp", kind: str = "mlp") -> dict:
    if site.client.get(f"/heads/{name}").status_code == 404:
        extracted(site)
        answer = site.client.post("/heads", json={"name": name, "dataset": "shapes", "backbone": "tiny", "head": kind})
        assert answer.status_code == 201, answer.text
    return site.client.get(f"/heads/{name}").json()


def test_the_key_is_asked_once_kept_for_the_tab_and_sent_only_as_a_header(browser, site, shots):
    context = browser.new_context(viewport={"width": 1280, "height": 600})
    page = context.new_page()
    watch = Watch(page)
    page.goto(site.url + "/ui/")
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", "wrong-key")
    page.click("#key-form button")
    page.wait_for_selector("#key-refused:not([hidden])")  # asked again, saying why
    page.screenshot(path=shots / "api-key.png")
    page.fill("#key-input", KEY)
    page.click("#key-form button")
    page.wait_for_selector("#key-dialog:not([open])", state="attached")
    page.wait_for_selector("#datasets-table tbody tr, #datasets-empty:not([hidden])", state="attached")
    assert page.evaluate("sessionStorage.getItem('headstart.apiKey')") == KEY
    assert page.evaluate("localStorage.length") == 0 and context.cookies() == []
    page.reload()  # the same tab: not asked again
    page.wait_for_selector("#datasets-table tbody tr, #datasets-empty:not([hidden])", state="attached")
    assert not page.is_visible("#key-dialog")
    api = [(url, auth) for url, auth in watch.requests if "/ui/" not in url]
    assert api and all(KEY not in url and "wrong-key" not in url for url, _ in watch.requests)
    assert {auth for url, auth in api if url.endswith("/datasets")} >= {f"Bearer {KEY}"}
    page.click("#forget-key")  # forgotten: the next request asks again
    page.click("nav a[data-view=jobs]")
    page.wait_for_selector("#key-dialog[open]")
    assert page.evaluate("sessionStorage.getItem('headstart.apiKey')") is None
    other = browser.new_context().new_page()  # another tab's session has no key
    other.goto(site.url + "/ui/")
    other.wait_for_selector("#key-dialog[open]")
    assert watch.dialogs == []
    context.close()
    other.context.close()


def test_extract_from_the_page_and_watch_the_job_reach_done(browser, site, shots):
    page, watch = open_page(browser, site)
    page.fill("#extract-form input[name=dataset]", "shapes")
    page.fill("#extract-form input[name=path]", "shapes")
    page.fill("#extract-form input[name=backbone]", "tiny")
    page.select_option("#extract-form select[name=weights]", "random")
    page.fill("#extract-form input[name=split]", "0.5,0.25,0.25")
    page.click("#extract-form button[type=submit]")
    page.wait_for_url(re.compile(r"#jobs$"))
    row = page.locator("#jobs-table tbody tr").first
    row.locator(".badge.succeeded").wait_for()
    assert row.locator(".done").inner_text().strip() == "48/48"
    assert row.locator("progress").get_attribute("value") == row.locator("progress").get_attribute("max") == "48"
    page.screenshot(path=shots / "jobs.png")
    page.click("nav a[data-view=datasets]")
    shapes = page.locator("#datasets-table tr[data-name=shapes]")
    shapes.wait_for()
    cells = shapes.locator("td").all_inner_texts()
    assert cells[:3] == ["shapes", "folders", "shapes"] and sum(map(int, cells[3:6])) == 48
    assert "tiny" in cells[7] and ": 48" in cells[7]
    page.screenshot(path=shots / "datasets.png")
    watch.clean()
    page.context.close()


def test_labels_from_file_names_from_the_page_and_the_extract_warnings_shown(browser, site):
    """Before, the page extracted class folders only, and a job's warnings (what the CLI prints: names that look
    like labels, a layout read otherwise) were never shown: a flat folder of cat.0.jpg became an unlabeled dataset
    without a word."""
    named = site.data / "named"
    for i, path in enumerate(make_folder(site.home.parent / "tmp-named", {"cat": 4, "dog": 4})):
        named.mkdir(exist_ok=True)
        path.rename(named / f"{path.parent.name}.{i}.jpg")
    page, watch = open_page(browser, site)
    form = "#extract-form"
    for dataset, labels in (("flat", "folders"), ("named", "names")):
        page.fill(f"{form} input[name=dataset]", dataset)
        page.fill(f"{form} input[name=path]", "named")
        page.fill(f"{form} input[name=backbone]", "tiny")
        page.select_option(f"{form} select[name=weights]", "random")
        page.select_option(f"{form} select[name=labels]", labels)
        assert page.locator("#extract-csv").is_hidden()
        page.click(f"{form} button[type=submit]")
        page.wait_for_url(re.compile(r"#jobs$"))
        page.locator(f"#jobs-table tbody tr:has-text('{dataset} ·') .badge.succeeded").wait_for()
        page.click("nav a[data-view=datasets]")
    flat = page.locator("#jobs-table tbody tr:has-text('flat ·')")
    assert "look like labels (2: cat 4, dog 4): to take those as the labels, extract with --name-labels" in \
        flat.locator(".warning").first.inner_text()
    assert page.locator("#jobs-table tbody tr:has-text('named ·') .warning").count() == 0
    page.click("nav a[data-view=datasets]")
    row = page.locator("#datasets-table tr[data-name=named]")
    row.wait_for()
    assert row.locator("td").all_inner_texts()[1] == "names"
    page.select_option(f"{form} select[name=labels]", "csv")  # a CSV asks for its path
    assert page.locator("#extract-csv").is_visible()
    assert page.locator(f"{form} input[name=labels_csv]").get_attribute("required") is not None
    watch.clean()
    page.context.close()


def test_preview_an_extract_from_the_page(browser, site):
    page, watch = open_page(browser, site)
    form = "#extract-form"
    page.fill(f"{form} input[name=dataset]", "peek")
    page.fill(f"{form} input[name=path]", "shapes")
    page.fill(f"{form} input[name=backbone]", "tiny")
    page.click("#extract-preview")
    box = page.locator("#extract-preview-result")
    box.locator("ul.classes li").first.wait_for()
    assert box.locator("p").first.inner_text() == \
        "48 images from <data>/shapes (class subfolders): 3 classes · split 0.6,0.2,0.2 (train, val, test), seed 42"
    assert sorted(box.locator("ul.classes li").all_inner_texts()) == sorted(
        [f"{XSS}: 16", "circle: 12", "square: 20"])  # the HTML class name is text
    assert "peek" not in {d["name"] for d in site.client.get("/datasets").json()}  # nothing registered
    page.fill(f"{form} input[name=path]", "shapez")  # a typo: the error names what is there
    page.click("#extract-preview")
    page.locator("#messages .message.error").last.wait_for()
    assert "the data root holds" in page.locator("#messages .message.error").last.inner_text()
    assert watch.errors == ["Failed to load resource: the server responded with a status of 404 (Not Found)"]
    watch.errors.clear()  # the browser's own line for the 404 asked for; nothing else
    watch.clean()
    page.context.close()


def test_remove_a_dataset_from_the_page_with_two_clicks(browser, site):
    make_folder(site.data / "gone", {"p": 3, "q": 3}, seed=21)
    job = site.client.post("/extract", json={"dataset": "gone", "path": "gone", "backbone": "tiny",
                                             "weights": "random:5"}).json()
    assert site.wait_job(job["job_id"])["state"] == "succeeded"
    page, watch = open_page(browser, site)
    button = page.locator("#datasets-table tr[data-name=gone] button.remove")
    button.click()
    assert button.inner_text() == "Remove gone?"  # the first click only asks
    assert "gone" in {d["name"] for d in site.client.get("/datasets").json()}
    button.click()
    page.locator("#datasets-table tr[data-name=gone]").wait_for(state="detached")
    assert page.locator("#messages .message").last.inner_text().startswith(
        "removed dataset gone, 6 cached vectors no dataset needs deleted")
    assert "gone" not in {d["name"] for d in site.client.get("/datasets").json()}
    watch.clean()
    page.context.close()


def test_a_running_job_is_cancelled_and_resumed_from_the_page(browser, site):
    page, watch = open_page(browser, site, "/ui/#datasets")
    page.fill("#extract-form input[name=dataset]", "big")
    page.fill("#extract-form input[name=path]", "big")
    page.fill("#extract-form input[name=backbone]", "vgg16")
    page.select_option("#extract-form select[name=weights]", "random")
    page.click("#extract-form button[type=submit]")
    row = page.locator("#jobs-table tbody tr").first
    row.locator(".badge.running").wait_for(timeout=60_000)
    row.get_by_role("button", name="Cancel").click()
    row.locator(".badge.cancelled").wait_for(timeout=60_000)
    row.get_by_role("button", name="Resume").click()
    row.locator(".badge.succeeded").wait_for(timeout=120_000)
    done, total = map(int, row.locator(".done").inner_text().strip().split("/"))
    assert done == total < 160  # what the cancelled run had committed was kept, not redone
    job = site.client.get("/jobs?limit=1").json()[0]
    assert job["request"]["dataset"] == "big" and job["state"] == "succeeded"
    failures = row.locator("td").nth(8)
    assert failures.inner_text().strip() == "0"
    big = next(d for d in site.client.get("/datasets").json() if d["name"] == "big")
    assert [f["vectors"] for f in big["features"]] == [160]
    watch.clean()
    page.context.close()


def test_train_a_head_and_read_its_table_matrix_and_curves(browser, site, shots):
    extracted(site)
    trained(site, "shapes-centroid", "centroid")
    page, watch = open_page(browser, site, "/ui/#heads")
    page.wait_for_selector("#train-form select[name=dataset] option[value=shapes]", state="attached")
    page.fill("#train-form input[name=name]", "shapes-mlp")
    page.select_option("#train-form select[name=dataset]", "shapes")
    page.select_option("#train-form select[name=backbone]", "tiny")
    page.select_option("#train-form select[name=head]", "mlp")
    page.click("#train-form button[type=submit]")
    page.locator("#heads-table tr[data-name='shapes-mlp']").wait_for(timeout=60_000)
    head = site.client.get("/heads/shapes-mlp").json()
    assert head["kind"] == "mlp"
    names = page.locator("#heads-table tbody tr td:first-child").all_inner_texts()
    assert set(names) == {"shapes-mlp", "shapes-centroid"}
    page.click("#heads-table th[data-key=name]")  # sorted by name, then the other way
    assert page.locator("#heads-table tbody tr td:first-child").all_inner_texts() == ["shapes-centroid", "shapes-mlp"]
    page.click("#heads-table th[data-key=name]")
    assert page.locator("#heads-table tbody tr td:first-child").all_inner_texts() == ["shapes-mlp", "shapes-centroid"]
    row = page.locator("#heads-table tr[data-name='shapes-mlp'] td").all_inner_texts()
    assert row[1:4] == ["mlp", "tiny", "shapes"] and float(row[5]) == pytest.approx(head["metrics"]["test"]["accuracy"],
                                                                                     abs=5e-4)
    page.click("#heads-table tr[data-name='shapes-mlp']")
    page.wait_for_selector("#roc svg polyline")
    test = head["metrics"]["test"]
    shown = [[int(c) for c in r.locator("td").all_inner_texts()] for r in page.locator("#confusion tbody tr").all()]
    assert shown == test["confusion_matrix"]
    assert page.locator("#confusion thead th.col").all_inner_texts() == test["labels"]
    assert page.locator("#per-class tbody tr").count() == len(test["labels"])
    assert page.locator("#training-curve svg polyline").count() == 2  # train and val loss
    curves = site.client.get("/heads/shapes-mlp/roc").json()["curves"]
    assert page.locator("#roc svg polyline").count() == len(curves) >= 2  # one curve per class with positives
    page.screenshot(path=shots / "heads.png", full_page=True)
    page.select_option("#head-split", "val")
    until(page, "document.querySelector('#head-summary').textContent.startsWith("
                           f"'{head['metrics']['val']['n']} images')")
    watch.clean()
    page.context.close()


def test_a_confusion_cell_opens_its_mistakes_with_thumbnails(browser, site, shots):
    head = trained(site)
    split, true, predicted, count = next(
        (s, m["labels"][i], m["labels"][j], c) for s in ("test", "val") for m in [head["metrics"][s]]
        for i, row in enumerate(m["confusion_matrix"]) for j, c in enumerate(row) if i != j and c)
    page, watch = open_page(browser, site, "/ui/#heads/shapes-mlp")
    page.wait_for_selector("#confusion td")
    page.select_option("#head-split", split)
    cell = page.locator(f"#confusion td.clickable[data-true='{true}'][data-predicted='{predicted}']")
    cell.click()
    page.wait_for_url(re.compile(r"#mistakes$"))
    cards = page.locator("#mistakes-grid figure")
    cards.first.wait_for()
    assert cards.count() == count
    assert page.locator("#mistakes-filter .chip").inner_text() == f"true {true} → predicted {predicted}"
    assert set(page.locator("#mistakes-grid .true").all_inner_texts()) == {true}
    assert set(page.locator("#mistakes-grid .predicted").all_inner_texts()) == {predicted}
    until(page, "[...document.querySelectorAll('#mistakes-grid img')].every(i => i.complete && "
                           "i.naturalWidth > 0 && i.src.startsWith('blob:'))")
    page.click("#mistakes-clear")  # every mistake of the split, most confident first, then least
    page.wait_for_selector("#mistakes-filter", state="hidden")
    total = site.client.get("/heads/shapes-mlp/mistakes", params={"split": split}).json()["total"]
    until(page, f"document.querySelectorAll('#mistakes-grid figure').length === {total}")
    first = [float(t.rstrip("%")) for t in page.locator("#mistakes-grid .confidence").all_inner_texts()]
    assert first == sorted(first, reverse=True)
    page.select_option("#mistakes-form select[name=order]", "unsure")
    until(page, "document.querySelector('#mistakes-count').textContent.includes('least')")
    until(page, f"document.querySelectorAll('#mistakes-grid figure').length === {total}")
    second = [float(t.rstrip("%")) for t in page.locator("#mistakes-grid .confidence").all_inner_texts()]
    assert second == sorted(second) and sorted(second) == sorted(first)
    page.screenshot(path=shots / "mistakes.png", full_page=True)
    watch.clean()
    page.context.close()


def test_a_head_of_many_classes_shows_its_most_frequent_confusions(browser, site):
    """41 classes: the most frequent confusions, each opening its images, instead of a matrix (a thousand classes
    made a million cells, and Math.max(...cells) overflowed the stack: the head's view broke)."""
    make_folder(site.data / "many", {f"c{i:02d}": 3 for i in range(41)}, seed=5)
    job = site.client.post("/extract", json={"dataset": "many", "path": "many", "backbone": "tiny",
                                             "weights": "random:3", "split": "0.34,0.33,0.33"}).json()
    assert site.wait_job(job["job_id"])["state"] == "succeeded"
    answer = site.client.post("/heads", json={"name": "many-c", "dataset": "many", "head": "centroid",
                                              "weights": "random:3"})
    assert answer.status_code == 201, answer.text
    test = answer.json()["metrics"]["test"]
    pairs = sorted(((c, i, j) for i, row in enumerate(test["confusion_matrix"]) for j, c in enumerate(row)
                    if i != j and c), key=lambda p: (-p[0], p[1], p[2]))
    assert pairs, "no confusion to show"
    page, watch = open_page(browser, site, "/ui/#heads/many-c")
    page.wait_for_selector("#confusion table.pairs")
    assert page.locator("#confusion td.cell").count() == 0
    wrong = sum(c for c, _, _ in pairs)
    assert page.locator("#confusion p").inner_text() == (
        f"41 classes, too many for a matrix: the {min(50, len(pairs))} most frequent confusions of {len(pairs)} "
        f"({wrong} images predicted wrong); click a row for its images")
    rows = [r.locator("td").all_inner_texts() for r in page.locator("#confusion tbody tr").all()]
    labels = test["labels"]
    assert rows == [[labels[i], labels[j], str(c)] for c, i, j in pairs[:50]]
    curves = site.client.get("/heads/many-c/roc").json()["curves"]
    page.wait_for_selector("#roc svg polyline")  # the 10 it separates worst, not 41 curves
    worst = sorted(curves, key=lambda c: c["auc"])[:10]
    assert page.locator("#roc .legend li").all_inner_texts() == [f"{c['label']} (AUC {c['auc']:.3f})" for c in worst]
    assert page.locator("#roc p.muted").inner_text() == f"{len(curves)} classes: the 10 with the lowest AUC"
    page.locator("#confusion tbody tr").first.click()
    page.wait_for_url(re.compile(r"#mistakes$"))
    page.locator("#mistakes-grid figure").first.wait_for()
    count, i, j = pairs[0]
    assert page.locator("#mistakes-grid figure").count() == count
    assert page.locator("#mistakes-filter .chip").inner_text() == f"true {labels[i]} → predicted {labels[j]}"
    watch.clean()
    page.context.close()


def test_a_head_scored_on_another_dataset_and_its_mistakes_there(browser, site, shots):
    """A holdout folder extracted with the head's features is offered beside the head's own dataset: scored on all
    its images (a class the head never saw is warned about), its confusion cells open its own mistakes."""
    head = trained(site)
    make_folder(site.data / "holdout", {"circle": 4, "square": 4, XSS: 4, "triangle": 2}, seed=9)
    job = site.client.post("/extract", json={"dataset": "holdout", "path": "holdout", "backbone": "tiny",
                                             "weights": "random"}).json()
    assert site.wait_job(job["job_id"])["state"] == "succeeded"
    make_folder(site.data / "loose" / "x", {"circle": 3}, seed=10)  # with the head's features, but no labels
    job = site.client.post("/extract", json={"dataset": "loose", "path": "loose", "backbone": "tiny",
                                             "weights": "random", "unlabeled": True}).json()
    assert site.wait_job(job["job_id"])["state"] == "succeeded"
    scored = site.client.get("/heads/shapes-mlp/evaluation", params={"dataset": "holdout"}).json()
    page, watch = open_page(browser, site, "/ui/#heads/shapes-mlp")
    page.wait_for_selector("#head-dataset option[value=holdout]", state="attached")
    offered = page.locator("#head-dataset option").all_inner_texts()
    # not "loose": an unlabeled dataset is predicted, never scored ("named", labeled by its file names in another
    # test of this module, is offered as well when that test ran first)
    assert [name for name in offered if name != "named"] == ["shapes (its own)", "holdout"]
    page.select_option("#head-dataset", "holdout")
    until(page, "document.querySelector('#head-summary').textContent.startsWith('14 images')")
    assert page.input_value("#head-split") == "all"
    assert "triangle" in page.locator("#head-warnings li").first.inner_text()
    shown = [[int(c) for c in r.locator("td").all_inner_texts()] for r in page.locator("#confusion tbody tr").all()]
    assert shown == scored["metrics"]["confusion_matrix"] and "triangle" in scored["metrics"]["labels"]
    page.wait_for_selector("#roc svg polyline")
    curves = site.client.get("/heads/shapes-mlp/roc", params={"dataset": "holdout"}).json()["curves"]
    assert page.locator("#roc svg polyline").count() == len(curves)
    page.screenshot(path=shots / "heads-holdout.png", full_page=True)
    cell = page.locator("#confusion td.clickable[data-true='triangle']").first  # never right: a class it never saw
    count = int(cell.inner_text())
    cell.click()
    page.wait_for_url(re.compile(r"#mistakes$"))
    until(page, f"document.querySelectorAll('#mistakes-grid figure').length === {count}")
    assert page.input_value("#mistakes-form select[name=dataset]") == "holdout"
    assert "of holdout" in page.locator("#mistakes-count").inner_text()
    assert set(page.locator("#mistakes-grid .true").all_inner_texts()) == {"triangle"}
    until(page, "[...document.querySelectorAll('#mistakes-grid img')].every(i => i.complete && "
                "i.naturalWidth > 0 && i.src.startsWith('blob:'))")  # thumbnails of the holdout's images
    page.select_option("#mistakes-form select[name=dataset]", "")  # back to its own: the test split
    until(page, "document.querySelector('#mistakes-count').textContent.includes('shapes-mlp on test,') || "
                "document.querySelector('#mistakes-count').textContent.startsWith('0 mistakes of shapes-mlp on test')")
    page.goto(site.url + "/ui/#heads/shapes-mlp")  # shown again: its own dataset's test split
    until(page, f"document.querySelector('#head-summary').textContent.startsWith('{head['metrics']['test']['n']} "
                f"images')")
    page.select_option("#head-split", "all")  # not saved with the head: scored now
    total = sum(head["split_sizes"].values())
    until(page, f"document.querySelector('#head-summary').textContent.startsWith('{total} images')")
    watch.clean()
    page.context.close()


def test_drop_images_and_see_top_k_bars(browser, site, shots):
    trained(site)
    page, watch = open_page(browser, site, "/ui/#predict")
    page.wait_for_selector("#predict-form select[name=head] option[value='shapes-mlp']", state="attached")
    page.select_option("#predict-form select[name=head]", "shapes-mlp")
    page.fill("#predict-form input[name=top_k]", "2")
    # make_folder's class order: the HTML-named class (index 0), circle (1), square (2)
    files = [["circle.jpg", image_b64(1, 101)], ["square.jpg", image_b64(2, 102)], ["notes.txt", ""]]
    dropped = page.evaluate_handle("""(files) => {
        const dt = new DataTransfer();
        for (const [name, b64] of files) {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            dt.items.add(new File([bytes], name, {type: name.endsWith('.jpg') ? 'image/jpeg' : 'text/plain'}));
        }
        return dt;
    }""", files)
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": dropped})
    cards = page.locator("#predictions figure")
    until(page, "document.querySelectorAll('#predictions figure').length === 2")
    assert cards.locator(".path").all_inner_texts() == ["circle.jpg", "square.jpg"]  # the text file left out
    assert [c.locator("ol.bars li").count() for c in cards.all()] == [2, 2]
    tops = [c.locator("ol.bars li .label").first.inner_text() for c in cards.all()]
    assert tops == ["circle", "square"]
    widths = page.evaluate("[...document.querySelectorAll('#predictions .fill')].map(f => parseFloat(f.style.width))")
    assert all(0 <= w <= 100 for w in widths) and widths[0] >= widths[1]
    page.screenshot(path=shots / "predict.png", full_page=True)
    watch.clean()
    page.context.close()


def test_predict_an_extracted_folder_from_the_cache_and_download_the_csv(browser, site, shots):
    """An unlabeled folder extracted with the head's features: its predictions from the cache, 100 a page with
    thumbnails, and the whole listing as a CSV whose fields a spreadsheet never reads as formulas."""
    trained(site)
    inbox = site.data / "inbox"
    make_folder(site.home.parent / "inbox-source", {"circle": 60, "square": 55}, seed=21)
    inbox.mkdir(exist_ok=True)
    for path in sorted((site.home.parent / "inbox-source").rglob("*.jpg")):
        (inbox / f"{path.parent.name}-{path.name}").write_bytes(path.read_bytes())
    (inbox / "=HYPERLINK(1).jpg").write_bytes(next(inbox.glob("circle-*")).read_bytes() + b"\0")  # new content
    job = site.client.post("/extract", json={"dataset": "inbox", "path": "inbox", "backbone": "tiny",
                                             "weights": "random", "unlabeled": True}).json()
    assert site.wait_job(job["job_id"])["state"] == "succeeded"
    expected = site.client.get("/heads/shapes-mlp/predictions", params={"dataset": "inbox", "limit": 1000,
                                                                        "top_k": 2}).json()
    assert expected["total"] == 116
    page, watch = open_page(browser, site, "/ui/#predict")
    page.wait_for_selector("#predict-form select[name=head] option[value='shapes-mlp']", state="attached")
    page.select_option("#predict-form select[name=head]", "shapes-mlp")
    page.wait_for_selector("#cached-form select[name=dataset] option[value=inbox]", state="attached")
    page.select_option("#cached-form select[name=dataset]", "inbox")
    page.click("#cached-form button[type=submit]")
    until(page, "document.querySelectorAll('#cached-table tbody tr').length === 100")
    assert page.locator("#cached-count").inner_text().startswith("116 images of inbox (all) predicted by shapes-mlp")
    shown = page.locator("#cached-table tbody tr td.label").all_inner_texts()
    assert shown == [r["top"][0]["label"] for r in expected["rows"][:100]]
    assert page.locator("#cached-table tr.wrong").count() == 0  # no true labels: nothing marked wrong
    page.click("#cached-more")
    until(page, "document.querySelectorAll('#cached-table tbody tr').length === 116")
    assert page.is_hidden("#cached-more")
    until(page, "[...document.querySelectorAll('#cached-table img')].slice(0, 5).every(i => i.complete && "
                "i.naturalWidth > 0 && i.src.startsWith('blob:'))")
    page.screenshot(path=shots / "predict-cached.png", full_page=True)
    page.fill("#predict-form input[name=top_k]", "2")
    with page.expect_download() as download:
        page.click("#cached-csv")
    rows = list(csv.reader(open(download.value.path(), newline="")))
    assert rows[0] == ["image", "prediction", "probability", "top_k", "true_label", "split"] and len(rows) == 117
    by_path = {r["path"]: r for r in expected["rows"]}
    for row in rows[1:]:
        path = row[0][1:] if row[0].startswith("'") else row[0]
        assert row[1] == by_path[path]["top"][0]["label"] and len(row[3].split("|")) == 2
    assert ["'=HYPERLINK(1).jpg"] == [row[0] for row in rows if "HYPERLINK" in row[0]]  # never a formula
    page.select_option("#cached-form select[name=dataset]", "shapes")  # labeled: wrong predictions marked
    page.select_option("#cached-form select[name=split]", "test")
    page.click("#cached-form button[type=submit]")
    test = site.client.get("/heads/shapes-mlp/predictions", params={"dataset": "shapes", "split": "test"}).json()
    until(page, f"document.querySelectorAll('#cached-table tbody tr').length === {test['total']}")
    wrong = sum(r["true"] != r["top"][0]["label"] for r in test["rows"])
    assert page.locator("#cached-table tr.wrong").count() == wrong
    watch.clean()
    page.context.close()


def test_html_in_class_and_file_names_is_shown_as_text(browser, site):
    head = trained(site, "shapes-centroid", "centroid")  # a centroid cannot learn the filed circles: mistakes
    split, rows = next((s, rows) for s in ("train", "val", "test") for rows in [site.client.get(
        "/heads/shapes-centroid/mistakes", params={"split": s, "limit": 1000}).json()["rows"]]
        if any(r["path"].endswith(XSS_FILE) for r in rows))
    page, watch = open_page(browser, site, "/ui/#heads/shapes-centroid")
    page.wait_for_selector("#confusion th.col")
    assert XSS in page.locator("#confusion thead th.col").all_inner_texts()
    assert XSS in page.locator("#per-class tbody td:first-child").all_inner_texts()
    page.wait_for_selector("#roc .legend li")
    assert page.locator("#roc .legend li", has_text=XSS).count() == 1
    page.goto(site.url + "/ui/#mistakes")
    page.select_option("#mistakes-form select[name=head]", "shapes-centroid")
    page.select_option("#mistakes-form select[name=split]", split)
    until(page, f"document.querySelector('#mistakes-count').textContent.includes('centroid on {split}')")
    paths = page.locator("#mistakes-grid .path").all_inner_texts()
    assert paths == [r["path"] for r in rows] and any(p.endswith(XSS_FILE) for p in paths)
    assert page.locator("img[src='x'], img[src='y']").count() == 0  # no element was made from a name
    assert head["classes"][0] == XSS
    watch.clean()  # no alert ran, nothing was refused by the CSP, no script error
    page.context.close()


def test_without_an_api_key_the_page_never_asks(browser, tmp_path):
    from tests.conftest import make_folder
    from tests.service.server import Server

    make_folder(tmp_path / "data" / "few", {"x": 3, "y": 3})
    server = Server(tmp_path / "home", tmp_path / "data", key=None).start()
    try:
        page = browser.new_context().new_page()
        watch = Watch(page)
        page.goto(server.url + "/ui/#datasets")
        page.fill("#extract-form input[name=dataset]", "few")
        page.fill("#extract-form input[name=path]", "few")
        page.fill("#extract-form input[name=backbone]", "tiny")
        page.select_option("#extract-form select[name=weights]", "random")
        page.click("#extract-form button[type=submit]")
        page.locator("#jobs-table tbody tr .badge.succeeded").wait_for()
        assert not page.is_visible("#key-dialog") and page.is_hidden("#forget-key")
        assert all(auth is None for _, auth in watch.requests)
        watch.clean()
        page.context.close()
    finally:
        assert server.stop()


def test_a_compare_job_shows_its_ranking(browser, site):
    extracted(site)
    accepted = site.client.post("/compare", json={"dataset": "shapes", "backbones": ["tiny"], "weights": "random"})
    assert accepted.status_code == 202, accepted.text
    job = site.wait_job(accepted.json()["job_id"])
    assert job["state"] == "succeeded", job
    page, watch = open_page(browser, site, "/ui/#jobs")
    ranking = page.locator(f"#jobs-table tr[data-id='{job['id']}'] details.ranking")
    ranking.wait_for()
    cells = ranking.locator("tbody tr td").all_inner_texts()
    row = job["result"]["rows"][0]
    assert cells[:2] == ["1", "tiny"] and float(cells[2]) == pytest.approx(row["val_accuracy"], abs=5e-4)
    assert row["warnings"] and "the val split has fewer than 5 images" in row["warnings"][0]  # 16 images a class
    notes = ranking.locator("p.warning").all_inner_texts()  # said under the ranking, as text (a label is XSS)
    bar = page.locator(f"#jobs-table tr[data-id='{job['id']}'] progress")
    assert bar.get_attribute("value") == bar.get_attribute("max")  # finished: a full bar
    assert notes == list(dict.fromkeys(row["warnings"])) and ranking.locator("img").count() == 0
    page.click(f"#jobs-table tr[data-id='{job['id']}'] details.ranking summary")  # closed by the user...
    page.wait_for_timeout(1500)  # ...stays closed while the page polls (nothing changed)
    assert ranking.get_attribute("open") is None
    watch.clean()
    page.context.close()


def test_a_tab_in_the_background_polls_the_jobs_rarely_and_at_once_when_shown_again(browser, site):
    page, watch = open_page(browser, site, "/ui/#jobs")
    page.locator("#jobs-table").wait_for()

    def polls() -> int:
        return sum(1 for url, _ in watch.requests if "/jobs?limit=" in url)

    def shown(visible: bool) -> None:  # what the browser does when the tab goes to the background and back
        page.evaluate("""(visible) => {
            Object.defineProperty(document, "hidden", {value: !visible, configurable: true});
            Object.defineProperty(document, "visibilityState", {value: visible ? "visible" : "hidden",
                                                                configurable: true});
            document.dispatchEvent(new Event("visibilitychange"));
        }""", visible)

    start = polls()
    page.wait_for_timeout(2500)
    assert polls() - start >= 2  # shown, on the Jobs view: about every 0.7 s
    shown(False)
    page.wait_for_timeout(1000)  # the poll already scheduled may still come; then every 30 s
    hidden = polls()
    page.wait_for_timeout(3000)
    assert polls() == hidden
    shown(True)
    page.wait_for_timeout(500)  # (events reach the watch while Playwright waits)
    assert polls() > hidden
    watch.clean()
    page.context.close()
