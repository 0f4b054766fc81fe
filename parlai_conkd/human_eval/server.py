"""The local study server: the rating page and a small JSON API, on 127.0.0.1 by default.

GET  /                 the rating page (server mode)
GET  /api/unit?worker_id=ID      the rater's next unit view (403 once screened out)
POST /api/onboarding   {unit_id, worker_id, answers}: grade the onboarding answers
POST /api/submit       {unit_id, worker_id, answers}: store the unit (ACUTE result shape)
GET  /api/status       how many units are stored / pending
"""

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Tuple
from urllib.parse import parse_qs, urlparse

from parlai_conkd.human_eval.page import render_page
from parlai_conkd.human_eval.study import COMPLETED, Study, StudyError
from parlai_conkd.human_eval.units import AnswerError

MAX_BODY_BYTES = 1 << 20


def make_handler(study: Study):
    page = render_page('server').encode('utf-8')

    class Handler(BaseHTTPRequestHandler):
        server_version = 'ConkdHumanEval/1'

        def log_message(self, fmt, *args):  # keep test and study consoles readable
            pass

        def _send(self, status, body: bytes, content_type: str):
            self.send_response(status)
            self.send_header('Content-Type', content_type)
            self.send_header('Content-Length', str(len(body)))
            self.send_header('Cache-Control', 'no-store')
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status, obj):
            self._send(status, json.dumps(obj).encode('utf-8'), 'application/json')

        def _body(self):
            length = int(self.headers.get('Content-Length') or 0)
            if length > MAX_BODY_BYTES:
                raise AnswerError('request body too large')
            try:
                return json.loads(self.rfile.read(length) or b'{}')
            except json.JSONDecodeError as exc:
                raise AnswerError(f'request body is not JSON ({exc.msg})') from exc

        def do_GET(self):
            url = urlparse(self.path)
            if url.path in ('/', '/index.html'):
                return self._send(HTTPStatus.OK, page, 'text/html; charset=utf-8')
            if url.path == '/api/unit':
                worker_id = (parse_qs(url.query).get('worker_id') or [''])[0].strip()
                if not worker_id:
                    return self._json(
                        HTTPStatus.BAD_REQUEST, {'error': 'worker_id is required'}
                    )
                try:
                    unit = study.new_unit(worker_id)
                except StudyError as exc:
                    status = (
                        HTTPStatus.FORBIDDEN
                        if 'screened out' in str(exc)
                        else HTTPStatus.CONFLICT
                    )
                    return self._json(status, {'error': str(exc)})
                return self._json(HTTPStatus.OK, study.view(unit))
            if url.path == '/api/status':
                records = study.store.records()
                return self._json(
                    HTTPStatus.OK,
                    {
                        'completed': sum(r['status'] == COMPLETED for r in records),
                        'screened_out': sum(r['status'] != COMPLETED for r in records),
                        'pending': len(study.pending),
                    },
                )
            return self._json(
                HTTPStatus.NOT_FOUND, {'error': f'no such page {url.path}'}
            )

        def do_POST(self):
            url = urlparse(self.path)
            try:
                body = self._body()
                unit_id, worker_id = body.get('unit_id', ''), body.get('worker_id', '')
                answers = body.get('answers')
                if not isinstance(answers, list):
                    raise AnswerError('answers must be a list')
                if url.path == '/api/onboarding':
                    return self._json(
                        HTTPStatus.OK,
                        {'passed': study.grade_onboarding(unit_id, worker_id, answers)},
                    )
                if url.path == '/api/submit':
                    record = study.submit(unit_id, worker_id, answers)
                    return self._json(
                        HTTPStatus.OK,
                        {'unit_id': record['unit_id'], 'status': record['status']},
                    )
            except (AnswerError, StudyError) as exc:
                return self._json(HTTPStatus.BAD_REQUEST, {'error': str(exc)})
            return self._json(
                HTTPStatus.NOT_FOUND, {'error': f'no such endpoint {url.path}'}
            )

    return Handler


def start_server(
    study: Study, host: str = '127.0.0.1', port: int = 0
) -> Tuple[ThreadingHTTPServer, str]:
    """Serve in a background thread; port 0 picks a free port. Returns (server, base URL)."""
    server = ThreadingHTTPServer((host, port), make_handler(study))
    server.daemon_threads = True
    threading.Thread(
        target=server.serve_forever, daemon=True, name='human-eval-server'
    ).start()
    return server, f'http://{server.server_address[0]}:{server.server_address[1]}'
