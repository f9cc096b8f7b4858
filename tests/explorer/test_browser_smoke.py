"""The browser harness itself: a page served on 127.0.0.1 opens in headless Chromium, its title reads back,
and ``console_errors`` sees a ``console.error`` (and nothing on a clean page)."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from browser import chromium, console_errors

PAGES = {
    "/": "<!doctype html><title>Veracity smoke</title><p>ok</p>",
    "/boom": '<!doctype html><title>Boom</title><script>console.error("boom")</script>',
}


class Pages(BaseHTTPRequestHandler):
    def do_GET(self):
        page = PAGES.get(self.path)
        if page is None:  # /favicon.ico among them: an empty answer, not a 404 the console would report
            self.send_response(204)
            self.end_headers()
            return
        body = page.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def site():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)  # port 0: the OS picks a free one
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    driver.quit()


def test_clean_page(site, browser):
    browser.get(site + "/")
    assert browser.title == "Veracity smoke"
    assert console_errors(browser) == []


def test_console_error_is_seen(site, browser):
    browser.get(site + "/boom")
    assert browser.title == "Boom"
    errors = console_errors(browser)
    assert any("boom" in message for message in errors), errors
