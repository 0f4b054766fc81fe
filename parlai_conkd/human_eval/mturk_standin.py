"""A local stand-in for the Mechanical Turk requester API and worker site, on 127.0.0.1.

It speaks the real wire protocol (AWS JSON 1.1, ``X-Amz-Target: MTurkRequesterServiceV20170117.*``)
so the unchanged boto3 ``mturk`` client talks to it with ``endpoint_url=``; request signatures
are accepted without checking. It exists to rehearse a study and to test the route end to end
without an AWS account or any traffic leaving the machine.

Requester operations: GetAccountBalance, CreateHIT, GetHIT, ListHITs, ListAssignmentsForHIT,
ApproveAssignment, RejectAssignment, CreateQualificationType, ListQualificationTypes,
AssociateQualificationWithWorker.

Worker site (what MTurk does around an HTMLQuestion):
    GET  /worker/accept?hitId=H&workerId=W   accept (qualifications enforced) -> redirect to the task
    GET  /worker/task?hitId&assignmentId&workerId&turkSubmitTo   the HIT's HTMLContent
    POST /mturk/externalSubmit               the page's form: assignmentId + answer fields
"""

import json
import re
import threading
import time
import uuid
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Tuple
from urllib.parse import parse_qs, urlencode, urlparse

TARGET_PREFIX = 'MTurkRequesterServiceV20170117.'
_HTML_CONTENT_RE = re.compile(r'<HTMLContent><!\[CDATA\[(.*)\]\]></HTMLContent>', re.S)


class _Fault(Exception):
    def __init__(self, message, kind='RequestError'):
        super().__init__(message)
        self.kind = kind


def _id() -> str:
    return uuid.uuid4().hex[:20].upper()


class FakeTurk:
    """The stand-in's state; every operation is a method named like the API operation."""

    def __init__(self, balance: str = '10000.00'):
        self.balance = balance
        self.hits: Dict[str, Dict] = {}
        self.assignments: Dict[str, Dict] = {}
        self.qualification_types: Dict[str, Dict] = {}
        self.worker_quals: Dict[Tuple[str, str], int] = {}
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ requester API
    def GetAccountBalance(self, req):
        return {'AvailableBalance': self.balance}

    def CreateHIT(self, req):
        for key in (
            'Title',
            'Description',
            'Reward',
            'AssignmentDurationInSeconds',
            'LifetimeInSeconds',
            'Question',
        ):
            if key not in req:
                raise _Fault(f'CreateHIT: missing {key}', 'ParameterValidationError')
        if (
            not _HTML_CONTENT_RE.search(req['Question'])
            and '<ExternalURL>' not in req['Question']
        ):
            raise _Fault(
                'Question is neither an HTMLQuestion nor an ExternalQuestion',
                'ParameterValidationError',
            )
        now = time.time()
        hit = {
            'HITId': _id(),
            'HITTypeId': _id(),
            'HITGroupId': _id(),
            'CreationTime': now,
            'Title': req['Title'],
            'Description': req['Description'],
            'Question': req['Question'],
            'Keywords': req.get('Keywords', ''),
            'HITStatus': 'Assignable',
            'MaxAssignments': int(req.get('MaxAssignments', 1)),
            'Reward': req['Reward'],
            'AutoApprovalDelayInSeconds': int(
                req.get('AutoApprovalDelayInSeconds', 2592000)
            ),
            'Expiration': now + int(req['LifetimeInSeconds']),
            'AssignmentDurationInSeconds': int(req['AssignmentDurationInSeconds']),
            'QualificationRequirements': req.get('QualificationRequirements', []),
            'RequesterAnnotation': req.get('RequesterAnnotation', ''),
            'NumberOfAssignmentsPending': 0,
            'NumberOfAssignmentsAvailable': int(req.get('MaxAssignments', 1)),
            'NumberOfAssignmentsCompleted': 0,
        }
        self.hits[hit['HITId']] = hit
        return {'HIT': self._public_hit(hit)}

    def _public_hit(self, hit):
        return dict(hit)

    def _hit(self, hit_id):
        if hit_id not in self.hits:
            raise _Fault(f'Hit {hit_id} does not exist.')
        return self.hits[hit_id]

    def GetHIT(self, req):
        return {'HIT': self._public_hit(self._hit(req['HITId']))}

    def ListHITs(self, req):
        return {
            'HITs': [self._public_hit(h) for h in self.hits.values()],
            'NumResults': len(self.hits),
        }

    def ListAssignmentsForHIT(self, req):
        self._hit(req['HITId'])
        statuses = req.get('AssignmentStatuses') or [
            'Submitted',
            'Approved',
            'Rejected',
        ]
        found = [
            a
            for a in self.assignments.values()
            if a['HITId'] == req['HITId'] and a['AssignmentStatus'] in statuses
        ]
        return {'Assignments': found, 'NumResults': len(found)}

    def _assignment(self, assignment_id, status):
        a = self.assignments.get(assignment_id)
        if a is None:
            raise _Fault(f'Assignment {assignment_id} does not exist.')
        if a['AssignmentStatus'] != status:
            raise _Fault(f'This operation can be called with a status of: {status}')
        return a

    def ApproveAssignment(self, req):
        a = self._assignment(req['AssignmentId'], 'Submitted')
        a.update(
            AssignmentStatus='Approved',
            ApprovalTime=time.time(),
            RequesterFeedback=req.get('RequesterFeedback', ''),
        )
        return {}

    def RejectAssignment(self, req):
        a = self._assignment(req['AssignmentId'], 'Submitted')
        a.update(
            AssignmentStatus='Rejected',
            RejectionTime=time.time(),
            RequesterFeedback=req['RequesterFeedback'],
        )
        return {}

    def CreateQualificationType(self, req):
        if any(q['Name'] == req['Name'] for q in self.qualification_types.values()):
            raise _Fault(
                f'You have already created a QualificationType with this name: {req["Name"]}'
            )
        q = {
            'QualificationTypeId': _id(),
            'Name': req['Name'],
            'Description': req['Description'],
            'QualificationTypeStatus': req['QualificationTypeStatus'],
            'CreationTime': time.time(),
        }
        self.qualification_types[q['QualificationTypeId']] = q
        return {'QualificationType': q}

    def ListQualificationTypes(self, req):
        query = (req.get('Query') or '').lower()
        found = [
            q for q in self.qualification_types.values() if query in q['Name'].lower()
        ]
        return {'QualificationTypes': found, 'NumResults': len(found)}

    def AssociateQualificationWithWorker(self, req):
        if req['QualificationTypeId'] not in self.qualification_types:
            raise _Fault(
                f'QualificationType {req["QualificationTypeId"]} does not exist.'
            )
        self.worker_quals[(req['WorkerId'], req['QualificationTypeId'])] = int(
            req.get('IntegerValue', 1)
        )
        return {}

    # ------------------------------------------------------------------ worker site
    def accept(self, hit_id: str, worker_id: str) -> Dict:
        hit = self._hit(hit_id)
        for requirement in hit['QualificationRequirements']:
            has = (worker_id, requirement['QualificationTypeId']) in self.worker_quals
            if requirement.get('Comparator') == 'DoesNotExist' and has:
                raise _Fault(
                    f'worker {worker_id} does not meet the qualification requirements'
                )
            if requirement.get('Comparator') == 'Exists' and not has:
                raise _Fault(
                    f'worker {worker_id} does not meet the qualification requirements'
                )
        if any(
            a['HITId'] == hit_id and a['WorkerId'] == worker_id
            for a in self.assignments.values()
        ):
            raise _Fault(f'worker {worker_id} already worked on HIT {hit_id}')
        if hit['NumberOfAssignmentsAvailable'] <= 0:
            raise _Fault(f'HIT {hit_id} has no assignments left')
        hit['NumberOfAssignmentsAvailable'] -= 1
        hit['NumberOfAssignmentsPending'] += 1
        a = {
            'AssignmentId': _id(),
            'WorkerId': worker_id,
            'HITId': hit_id,
            'AssignmentStatus': 'Accepted',
            'AcceptTime': time.time(),
        }
        self.assignments[a['AssignmentId']] = a
        return a

    def submit(self, assignment_id: str, fields: Dict[str, str]) -> Dict:
        a = self._assignment(assignment_id, 'Accepted')
        answers = ''.join(
            f'<Answer><QuestionIdentifier>{escape(k)}</QuestionIdentifier>'
            f'<FreeText>{escape(v)}</FreeText></Answer>'
            for k, v in fields.items()
            if k != 'assignmentId'
        )
        a.update(
            AssignmentStatus='Submitted',
            SubmitTime=time.time(),
            Answer=(
                '<?xml version="1.0" encoding="ASCII"?><QuestionFormAnswers xmlns="http://mechanicalturk.'
                'amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd">'
                f'{answers}</QuestionFormAnswers>'
            ),
        )
        hit = self.hits[a['HITId']]
        hit['NumberOfAssignmentsPending'] -= 1
        hit['NumberOfAssignmentsCompleted'] += 1
        return a

    def task_html(self, hit_id: str) -> str:
        match = _HTML_CONTENT_RE.search(self._hit(hit_id)['Question'])
        if not match:
            raise _Fault(f'HIT {hit_id} is not an HTMLQuestion')
        # CDATA sections split to carry "]]>" are joined back, as MTurk does
        return match.group(1).replace(']]]]><![CDATA[>', ']]>')


def _handler(turk: FakeTurk):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):
            pass

        def _send(self, status, body: bytes, content_type, headers=()):
            self.send_response(status)
            self.send_header('Content-Type', content_type)
            self.send_header('Content-Length', str(len(body)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _fault(self, exc: _Fault):
            body = json.dumps({'__type': exc.kind, 'Message': str(exc)}).encode()
            self._send(HTTPStatus.BAD_REQUEST, body, 'application/x-amz-json-1.1')

        def _base(self):
            return f'http://{self.server.server_address[0]}:{self.server.server_address[1]}'

        def do_GET(self):
            url = urlparse(self.path)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            try:
                with turk.lock:
                    if url.path == '/worker/accept':
                        a = turk.accept(q['hitId'], q['workerId'])
                        target = '/worker/task?' + urlencode(
                            {
                                'hitId': a['HITId'],
                                'assignmentId': a['AssignmentId'],
                                'workerId': a['WorkerId'],
                                'turkSubmitTo': self._base(),
                            }
                        )
                        return self._send(
                            HTTPStatus.FOUND, b'', 'text/plain', [('Location', target)]
                        )
                    if url.path == '/worker/task':
                        html = turk.task_html(q['hitId']).encode('utf-8')
                        return self._send(
                            HTTPStatus.OK, html, 'text/html; charset=utf-8'
                        )
            except (_Fault, KeyError) as exc:
                body = f'<p id="mturk-error">{escape(str(exc))}</p>'.encode()
                return self._send(
                    HTTPStatus.FORBIDDEN, body, 'text/html; charset=utf-8'
                )
            self._send(HTTPStatus.NOT_FOUND, b'not found', 'text/plain')

        def do_POST(self):
            length = int(self.headers.get('Content-Length') or 0)
            raw = self.rfile.read(length)
            url = urlparse(self.path)
            if url.path == '/mturk/externalSubmit':
                fields = {k: v[0] for k, v in parse_qs(raw.decode('utf-8')).items()}
                try:
                    with turk.lock:
                        turk.submit(fields.get('assignmentId', ''), fields)
                except _Fault as exc:
                    return self._send(
                        HTTPStatus.BAD_REQUEST, str(exc).encode(), 'text/plain'
                    )
                body = b'<p id="mturk-submitted">Your HIT was submitted.</p>'
                return self._send(HTTPStatus.OK, body, 'text/html; charset=utf-8')
            target = self.headers.get('X-Amz-Target', '')
            if not target.startswith(TARGET_PREFIX):
                return self._fault(
                    _Fault(f'unknown target {target!r}', 'UnknownOperationException')
                )
            operation = getattr(turk, target[len(TARGET_PREFIX) :], None)
            if operation is None or not target[len(TARGET_PREFIX) :][:1].isupper():
                return self._fault(
                    _Fault(
                        f'{target} is not implemented by the stand-in',
                        'UnknownOperationException',
                    )
                )
            try:
                with turk.lock:
                    result = operation(json.loads(raw or b'{}'))
            except _Fault as exc:
                return self._fault(exc)
            self._send(
                HTTPStatus.OK, json.dumps(result).encode(), 'application/x-amz-json-1.1'
            )

    return Handler


def start_standin(host: str = '127.0.0.1', port: int = 0):
    """Serve a fresh stand-in in a background thread; returns (server, FakeTurk, base URL)."""
    turk = FakeTurk()
    server = ThreadingHTTPServer((host, port), _handler(turk))
    server.daemon_threads = True
    threading.Thread(
        target=server.serve_forever, daemon=True, name='mturk-standin'
    ).start()
    return server, turk, f'http://{server.server_address[0]}:{server.server_address[1]}'
