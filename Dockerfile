# The official Odoo 18 image plus the Python packages ecrm_addon needs.
FROM odoo:18.0
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-numpy python3-scipy python3-phonenumbers \
    && rm -rf /var/lib/apt/lists/*
USER odoo
