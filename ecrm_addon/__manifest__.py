# Copyright 2026 ecrm_addon contributors
# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
{
    "name": "e-CRM",
    "summary": "Electronic CRM: one interaction log per customer, customer value "
    "and loyalty scores, one-to-one marketing with consent",
    "version": "18.0.1.7.0",
    "category": "Sales/CRM",
    "author": "ecrm_addon contributors",
    "maintainers": ["ecrm-addon"],
    "license": "LGPL-3",
    "development_status": "Alpha",
    "application": True,
    "depends": [
        "sale_management",
        "mass_mailing",
        "mass_mailing_sms",
        "loyalty",
    ],
    "external_dependencies": {"python": ["numpy", "scipy", "phonenumbers"]},
    "data": [
        "security/ecrm_groups.xml",
        "security/ir.model.access.csv",
        "security/ecrm_security.xml",
        "data/ecrm_channel_data.xml",
        "data/ecrm_score_data.xml",
        "data/ir_cron_data.xml",
        "data/ecrm_consent_data.xml",
        "data/ecrm_segment_data.xml",
        "views/ecrm_channel_views.xml",
        "views/ecrm_interaction_views.xml",
        "views/ecrm_customer_score_views.xml",
        "views/ecrm_score_run_views.xml",
        "views/ecrm_consent_views.xml",
        "views/ecrm_consent_templates.xml",
        "views/ecrm_campaign_views.xml",
        "views/res_partner_views.xml",
        "views/sale_order_views.xml",
        "views/crm_team_views.xml",
        "views/ecrm_api_source_views.xml",
        "views/ecrm_unmatched_event_views.xml",
        "wizard/ecrm_unmatched_match_wizard_views.xml",
        "wizard/ecrm_api_access_wizard_views.xml",
        "views/res_config_settings_views.xml",
        "views/ecrm_menus.xml",
    ],
    "assets": {
        "web.assets_backend": [
            "ecrm_addon/static/src/scss/*.scss",
        ],
        "web.assets_tests": [
            "ecrm_addon/static/tests/tours/*.js",
        ],
    },
    "uninstall_hook": "uninstall_hook",
    "demo": [
        "demo/ecrm_demo.xml",
    ],
}
