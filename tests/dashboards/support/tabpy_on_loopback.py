"""Run a real TabPy server bound to 127.0.0.1 only (TabPy itself always listens on every
interface): ``python tabpy_on_loopback.py CONFIG``. Everything else is TabPy's own start-up."""

import sys

import tornado.web

_listen = tornado.web.Application.listen


def _loopback_listen(self, port, address=None, **kwargs):
    return _listen(self, port, address="127.0.0.1", **kwargs)


tornado.web.Application.listen = _loopback_listen

if __name__ == "__main__":
    from tabpy.tabpy_server.app.app import TabPyApp

    TabPyApp(sys.argv[1]).run()
