"""Driving the Prefect UI's Resume form of a paused flow run (the operator's path for an
acknowledgement or an approval), shared by the browser tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

T = TypeVar("T")

#: The Resume modal, found by its heading.
MODAL = "//*[contains(@class,'p-modal')][.//*[normalize-space()='Resume Flow Run']]"
#: The UI's notices (a refused resume shows its reason in one).
TOASTS = "//*[contains(concat(' ', normalize-space(@class), ' '), ' p-toast__card ')]"
#: Seconds each step may take. The UI answers in seconds idle; on a 2-core machine
#: running the suite on two workers its queries have taken more than 45 s.
STEP_S = 120.0
#: Seconds the Resume modal may stay open after Submit before Submit is pressed again.
RESUBMIT_S = 20.0


def click(browser: WebDriver, locator: tuple[str, str]) -> bool:
    """Click the element at *locator*; False if it is missing or was just re-rendered."""
    from selenium.common.exceptions import (
        ElementNotInteractableException,
        NoSuchElementException,
        StaleElementReferenceException,
    )

    try:
        browser.find_element(*locator).click()
    except (
        NoSuchElementException,
        StaleElementReferenceException,
        ElementNotInteractableException,
    ):
        return False
    return True


def _field(title: str, control: str) -> str:
    """XPath of the *control* of the form field whose label starts with *title*."""
    label = f"span[contains(@class,'property__label') and starts-with(., '{title}')]"
    return f"{MODAL}//div[contains(@class,'p-label')][.//{label}]//{control}"


def _step(browser: WebDriver, what: str, condition: Callable[[WebDriver], T]) -> T:
    """Wait for *condition*; on a timeout fail naming *what* and the page's text, which
    a bare ``TimeoutException`` from Selenium does not."""
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, STEP_S, poll_frequency=0.5).until(condition)
    except TimeoutException:
        try:
            page = browser.find_element(By.TAG_NAME, "body").text
            shown = [
                f"{kind}: {element.text}"
                for kind, xpath in (("modal", MODAL), ("toast", TOASTS))
                for element in browser.find_elements(By.XPATH, xpath)
                if element.text
            ]
        except WebDriverException as error:
            page, shown = f"(unreadable: {error.msg})", []
        raise AssertionError(
            f"the Prefect UI: no {what} within {STEP_S:.0f} s at {browser.current_url}; "
            + "".join(f"\n{line}" for line in shown)
            + f"\nthe page showed:\n{page[:1500]}"
        ) from None


def _open_form(browser: WebDriver, first_field: str) -> WebElement:
    """Press Resume until the modal shows *first_field*. The run page re-renders as its
    queries answer, so a click may land on a button that is replaced before the modal
    opens; pressing again while no modal is shown is the operator's own remedy."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    resume = (By.XPATH, "//button[normalize-space()='Resume']")
    box = (By.XPATH, first_field)

    def form_shown(driver: WebDriver) -> WebElement | bool:
        try:
            found = driver.find_elements(*box)
            if found and found[0].is_displayed() and found[0].is_enabled():
                return found[0]
            if not driver.find_elements(By.XPATH, MODAL):
                click(driver, resume)
        except WebDriverException:
            return False
        return False

    return _element(_step(browser, "Resume form", form_shown))


def _element(found: WebElement | bool) -> WebElement:
    """The element a step waited for (a step only returns once it is truthy)."""
    assert not isinstance(found, bool), "a step returned no element"
    return found


def _clickable(browser: WebDriver, what: str, xpath: str) -> WebElement:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    return _element(_step(browser, what, ec.element_to_be_clickable((By.XPATH, xpath))))


def resume_in_ui(
    browser: WebDriver, run_url: str, answers: dict[str, str], switch_on: tuple[str, ...] = ()
) -> str:
    """Open *run_url*, press Resume, type each answer into the field titled by its key,
    turn on each switch titled in *switch_on*, press Submit, and wait for the modal to
    close. Returns the text the form showed (its description and field titles)."""
    from selenium.webdriver.common.by import By

    browser.get(run_url)
    fields = [(title, _field(title, "textarea")) for title in answers]
    _open_form(browser, fields[0][1] if fields else MODAL)
    for (title, xpath), value in zip(fields, answers.values(), strict=True):
        box = _clickable(browser, f"field {title!r}", xpath)
        box.clear()
        box.send_keys(value)
    for title in switch_on:
        switch = _clickable(browser, f"switch {title!r}", _field(title, "*[@role='switch']"))
        switch.click()

        def switched_on(_: WebDriver, switch: WebElement = switch) -> bool:
            return switch.get_attribute("aria-checked") == "true"

        _step(browser, f"switch {title!r} on", switched_on)
    shown = str(browser.find_element(By.XPATH, MODAL).text)
    _submit(browser)
    return shown


def _submit(browser: WebDriver) -> None:
    """Press Submit and wait for the modal to close, pressing again every
    :data:`RESUBMIT_S` while it stays open: the form checks its values with the server
    before it sends the resume, and a check or resume that failed (a toast the test
    cannot see coming) leaves the form open with nothing more to wait for. Pressing
    again is the operator's own remedy; a second resume of a run that is no longer
    paused is refused by Prefect and changes nothing."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    submit = (By.XPATH, f"{MODAL}//button[normalize-space()='Submit']")
    _step(browser, "Submit button", lambda driver: click(driver, submit))
    pressed = time.monotonic()

    def closed(driver: WebDriver) -> bool:
        nonlocal pressed
        try:
            if not any(m.is_displayed() for m in driver.find_elements(By.XPATH, MODAL)):
                return True
            if time.monotonic() - pressed >= RESUBMIT_S and click(driver, submit):
                pressed = time.monotonic()
        except WebDriverException:
            return False
        return False

    _step(browser, "closed modal after Submit", closed)
