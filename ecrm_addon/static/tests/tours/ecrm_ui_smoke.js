/**
 * Browser smoke test of the e-CRM screens, driven by tests/test_ecrm_ui_smoke.py.
 *
 * The Python test reads the e-CRM menus the user sees, with their actions and view types,
 * and calls window.ecrmUiSmoke(plan). For each menu this opens every view type of the
 * action, the form of the first record, and presses every header button and stat button
 * of that form (and the list's always-visible header buttons) except those the plan
 * excludes (sending, deleting). Any error dialog (server error, access error, crashed
 * view...) is a failure; all failures are reported at the end, in one console error.
 */
import { rpcBus } from "@web/core/network/rpc";

const inflight = new Set();
const rpcErrors = [];
rpcBus.addEventListener("RPC:REQUEST", ({ detail }) => inflight.add(detail.data.id));
rpcBus.addEventListener("RPC:RESPONSE", ({ detail }) => {
    inflight.delete(detail.data.id);
    if (detail.error) {
        const data = detail.error.data || {};
        rpcErrors.push(`${data.name || detail.error.message}: ${data.message || ""}`);
    }
});

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Wait until no RPC has been in flight for a while (the view has loaded). */
async function settle(timeout = 60000) {
    const start = Date.now();
    let quiet = 0;
    while (quiet < 4) {
        await delay(50);
        quiet = inflight.size ? 0 : quiet + 1;
        if (Date.now() - start > timeout) {
            throw new Error(`still loading after ${timeout} ms`);
        }
    }
}

function isVisible(el) {
    return Boolean(el && (el.offsetWidth || el.offsetHeight || el.getClientRects().length));
}

export class EcrmUiSmoke {
    constructor(plan) {
        this.plan = plan;
        this.env = odoo.__WOWL_DEBUG__.root.env;
        this.action = this.env.services.action;
        this.exclude = new RegExp(plan.exclude, "i");
        this.failures = [];
        this.stats = { menus: 0, views: 0, forms: 0, buttons: 0 };
        this.pressed = [];
    }

    /** Record the error dialogs on screen, then close every dialog. */
    async check(where = this.where) {
        for (const content of document.querySelectorAll(".o_error_dialog")) {
            const title = content.querySelector(".modal-title")?.textContent.trim();
            const body = content.querySelector(".modal-body")?.innerText.trim().slice(0, 300);
            const rpc = rpcErrors.at(-1) || "";
            this.failures.push(`${where}: ${title}: ${body} ${rpc}`.trim());
        }
        rpcErrors.length = 0;
        this.env.services.dialog.closeAll();
        await settle();
    }

    async step(where, fn) {
        this.where = where;
        if (this.plan.verbose) {
            console.log(`ecrm-smoke step: ${where}`);
        }
        try {
            await fn();
            await settle();
        } catch (error) {
            this.failures.push(`${where}: ${error.message || error}`);
        }
        await this.check(where);
    }

    async open(actionId, options = {}) {
        await this.check(); // an error of the step's previous action is not lost
        await this.action.doAction(actionId, { clearBreadcrumbs: true, ...options });
        await settle();
    }

    /** Press the list's always-visible header buttons (e.g. Recompute Now). */
    async pressListButtons(menu, where) {
        const buttons = [...document.querySelectorAll(".o_control_panel button[name][type]")]
            .filter((b) => isVisible(b) && !this.exclude.test(b.getAttribute("name")))
            .map((b) => [b.getAttribute("type"), b.getAttribute("name")]);
        for (const [type, name] of buttons) {
            await this.step(`${where} > list button ${name}`, async () => {
                await this.open(menu.action_id, { viewType: "list" });
                const button = document.querySelector(
                    `.o_control_panel button[name="${name}"][type="${type}"]`
                );
                button.click();
                this.stats.buttons++;
            });
        }
    }

    /** Open the first record of the list or kanban view that is on screen. */
    async openFirstRecord() {
        const cell = document.querySelector(".o_action_manager .o_data_row .o_data_cell");
        const card = document.querySelector(
            ".o_action_manager .o_kanban_record:not(.o_kanban_ghost):not(.o_kanban_quick_create)"
        );
        if (!(cell || card) || document.querySelector(".o_action_manager .o_view_sample_data")) {
            return false; // no record, or the sample records of an empty view
        }
        (cell || card).click();
        await settle();
        return Boolean(document.querySelector(".o_action_manager .o_form_view"));
    }

    formButtons() {
        const form = document.querySelector(".o_action_manager .o_form_view");
        const found = new Map();
        const add = (button, inMore) => {
            const type = button.getAttribute("type");
            const name = button.getAttribute("name");
            if (type && name && !this.exclude.test(name) && !found.has(`${type}:${name}`)) {
                found.set(`${type}:${name}`, { type, name, inMore });
            }
        };
        form.querySelectorAll(".o_statusbar_buttons button[name], .o-form-buttonbox button[name]")
            .forEach((b) => isVisible(b) && add(b, false));
        return found;
    }

    async moreButtons(found) {
        const more = document.querySelector(".o_action_manager .o-form-buttonbox .o_button_more");
        if (more) {
            more.click();
            await settle();
            document
                .querySelectorAll(".o_dropdown_more button[name]")
                .forEach((b) => {
                    const type = b.getAttribute("type");
                    const name = b.getAttribute("name");
                    if (type && name && !this.exclude.test(name) && !found.has(`${type}:${name}`)) {
                        found.set(`${type}:${name}`, { type, name, inMore: true });
                    }
                });
            await this.check();
            document.body.click();
        }
        return found;
    }

    async pressFormButtons(menu, where, resId) {
        const buttons = await this.moreButtons(this.formButtons());
        for (const { type, name, inMore } of buttons.values()) {
            await this.step(`${where} > form button ${name}`, async () => {
                await this.open(menu.action_id, { viewType: "form", props: { resId } });
                if (inMore) {
                    document.querySelector(".o_action_manager .o_button_more")?.click();
                    await settle();
                }
                const button = [
                    ...document.querySelectorAll(
                        `.o_action_manager .o_form_view button[name="${name}"][type="${type}"], .o_dropdown_more button[name="${name}"][type="${type}"]`
                    ),
                ].find(isVisible);
                if (!button) {
                    return; // hidden now that an earlier button changed the record
                }
                button.click();
                this.stats.buttons++;
                this.pressed.push(`${menu.path}: ${name}`);
            });
        }
    }

    async visitMenu(menu) {
        const where = `${this.plan.role} > ${menu.path}`;
        this.stats.menus++;
        await this.step(`${where} (menu)`, () => this.open(menu.action_id));
        for (const viewType of menu.view_types) {
            if (viewType === "form") {
                continue;
            }
            await this.step(`${where} > ${viewType}`, () =>
                this.open(menu.action_id, { viewType })
            );
            this.stats.views++;
            if (viewType === "list") {
                await this.pressListButtons(menu, `${where} > list`);
            }
        }
        if (!menu.view_types.includes("form")) {
            return;
        }
        const browse = ["list", "kanban"].find((type) => menu.view_types.includes(type));
        let resId = false;
        await this.step(`${where} > form`, async () => {
            if (browse) {
                await this.open(menu.action_id, { viewType: browse });
                if (await this.openFirstRecord()) {
                    resId = this.action.currentController.props.resId;
                    this.stats.forms++;
                    return;
                }
            }
            await this.open(menu.action_id, { viewType: "form" });
            this.stats.forms++;
            resId = this.action.currentController.props.resId;
        });
        if (resId && document.querySelector(".o_action_manager .o_form_view")) {
            await this.pressFormButtons(menu, `${where} > form`, resId);
        }
    }

    async run() {
        for (const menu of this.plan.menus) {
            await this.visitMenu(menu);
        }
        console.log(`ecrm-smoke ${this.plan.role}: ${JSON.stringify(this.stats)}`);
        if (this.plan.verbose) {
            console.log(`ecrm-smoke pressed: ${this.pressed.join(", ")}`);
        }
        if (this.failures.length) {
            console.error(`ecrm-smoke failures:\n${this.failures.join("\n")}`);
        } else {
            console.log("test successful");
        }
    }
}

window.ecrmUiSmoke = (plan) => new EcrmUiSmoke(plan).run();
