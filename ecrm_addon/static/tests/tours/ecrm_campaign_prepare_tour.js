import { registry } from "@web/core/registry";

/** Campaigns > New: a phone campaign on a segment, saved and prepared. */
registry.category("web_tour.tours").add("ecrm_campaign_prepare_tour", {
    steps: () => [
        {
            content: "Create a campaign",
            trigger: ".o_list_button_add",
            run: "click",
        },
        {
            content: "Name it",
            trigger: ".o_field_widget[name='name'] input",
            run: "edit Smoke call campaign",
        },
        {
            content: "Target a segment",
            trigger: ".o_field_widget[name='segment_id'] input",
            run: "edit Champions",
        },
        {
            content: "Pick the segment",
            trigger: ".o-autocomplete--dropdown-item:contains(Champions)",
            run: "click",
        },
        {
            content: "Add a channel",
            trigger: ".o_field_widget[name='channel_line_ids'] .o_field_x2many_list_row_add a",
            run: "click",
        },
        {
            content: "The channel is the phone",
            trigger: ".o_field_widget[name='channel_line_ids'] .o_field_widget[name='channel_id'] input",
            run: "edit Phone",
        },
        {
            content: "Pick the phone",
            trigger: ".o-autocomplete--dropdown-item:contains(Phone)",
            run: "click",
        },
        {
            content: "Prepare the campaign",
            trigger: ".o_form_view button[name='action_prepare']",
            run: "click",
        },
        {
            content: "The campaign is prepared",
            trigger: ".o_statusbar_status button.o_arrow_button_current:contains(Prepared)",
        },
    ],
});
