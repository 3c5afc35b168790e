"""Driving the Prefect UI's Resume form of a paused flow run (the operator's path for an
acknowledgement or an approval), shared by the browser tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

#: The Resume modal, found by its heading.
MODAL = "//*[contains(@class,'p-modal')][.//*[normalize-space()='Resume Flow Run']]"


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


def resume_in_ui(
    browser: WebDriver, run_url: str, answers: dict[str, str], switch_on: tuple[str, ...] = ()
) -> str:
    """Open *run_url*, press Resume, type each answer into the field titled by its key,
    turn on each switch titled in *switch_on*, press Submit, and wait for the modal to
    close. Returns the text the form showed (its description and field titles)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 45)
    browser.get(run_url)
    resume = (By.XPATH, "//button[normalize-space()='Resume']")
    # The page re-renders as its queries answer: click whichever button is there now.
    wait.until(lambda _: click(browser, resume))
    for title, value in answers.items():
        box = wait.until(ec.element_to_be_clickable((By.XPATH, _field(title, "textarea"))))
        box.clear()
        box.send_keys(value)
    for title in switch_on:
        switch = wait.until(
            ec.element_to_be_clickable((By.XPATH, _field(title, "*[@role='switch']")))
        )
        switch.click()
        wait.until(lambda _, s=switch: s.get_attribute("aria-checked") == "true")
    shown = str(browser.find_element(By.XPATH, MODAL).text)
    browser.find_element(By.XPATH, f"{MODAL}//button[normalize-space()='Submit']").click()
    wait.until(ec.invisibility_of_element_located((By.XPATH, MODAL)))
    return shown
