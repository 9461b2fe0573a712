import { registry } from "@web/core/registry";

registry.category("web_tour.tours").add("ecrm_preference_centre_tour", {
    steps: () => [
        {
            content: "The email channel is allowed: its switch is on",
            trigger: ".o_ecrm_preferences_form input[data-channel='email']:checked",
        },
        {
            content: "Turn email marketing off",
            trigger: ".o_ecrm_preferences_form input[data-channel='email']",
            run: "click",
        },
        {
            content: "Pause everything for 30 days",
            trigger: "select#pause_days",
            run: "select 30",
        },
        {
            content: "Save",
            trigger: "button.o_ecrm_preferences_save",
            run: "click",
        },
        {
            content: "The preferences are saved",
            trigger: ".o_ecrm_preferences_saved",
        },
        {
            content: "Email stays off after the reload",
            trigger: ".o_ecrm_preferences_form input[data-channel='email']:not(:checked)",
        },
    ],
});
