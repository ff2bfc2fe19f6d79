"""The site as gunicorn serves it: ``gunicorn app:app`` (settings in gunicorn.conf.py).

The application itself is built by ``web.create_app``; import that instead
when you need an app without loading the model at import time.
"""

import logging

from web import create_app

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
app = create_app()

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=5000)
