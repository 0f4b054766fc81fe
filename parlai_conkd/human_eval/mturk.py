"""The Mechanical Turk route: HTMLQuestion HITs carrying the rating page, through boto3's ``mturk``.

- ``create``: plans units from the study (onboarding comparison first in every HIT, since the
  worker is unknown until they accept), puts each unit's page (``page.render_page('mturk')``)
  into an HTMLQuestion, and creates the HITs. Every HIT requires that the worker does *not*
  hold the study's block qualification, so screened-out workers never see another HIT (ACUTE's
  soft block). The requester-side unit specs (which model is on which side) go to a manifest
  JSONL next to the results, never to the worker.
- ``collect``: lists submitted assignments, reads the page's ``answer`` field from MTurk's
  QuestionFormAnswers XML, grades onboarding, stores each assignment as an ACUTE-shaped unit,
  soft-blocks failing workers and (optionally) approves. HITs are planned before workers are
  known, so one worker may get a comparison twice (two HITs): both are stored and paid, counted
  as ``repeated``, and the analysis counts the worker's first rating only.

Targets: ``sandbox`` (default; fake money, https://workersandbox.mturk.com) and ``live``;
``--endpoint-url`` points the client anywhere else (the local stand-in). boto3 reads AWS
credentials the usual way (environment, ~/.aws/credentials, profile).
"""

import json
import sys
import xml.etree.ElementTree as ET
from typing import Dict, Iterable, List, Optional, Sequence

from parlai_conkd.human_eval.files import append_jsonl, iter_jsonl
from parlai_conkd.human_eval.page import render_page
from parlai_conkd.human_eval.study import COMPLETED, SCREENED_OUT, Study
from parlai_conkd.human_eval.units import (
    AnswerError,
    UnitSpec,
    check_answers,
    result_record,
)

ENDPOINTS = {
    'sandbox': 'https://mturk-requester-sandbox.us-east-1.amazonaws.com',
    'live': 'https://mturk-requester.us-east-1.amazonaws.com',
}
WORKER_SITES = {
    'sandbox': 'https://workersandbox.mturk.com',
    'live': 'https://worker.mturk.com',
}
#: MTurk's system qualification ids (documented in the MTurk API reference).
QUAL_PERCENT_APPROVED = '000000000000000000L0'
QUAL_NUMBER_APPROVED = '00000000000000000040'
QUAL_LOCALE = '00000000000000000071'
#: CreateHIT's Question parameter limit (characters).
MAX_QUESTION_CHARS = 131072
ANSWER_FIELD = 'answer'


class MTurkRouteError(RuntimeError):
    pass


def make_client(
    target: str = 'sandbox',
    endpoint_url: Optional[str] = None,
    profile: Optional[str] = None,
):
    try:
        import boto3
    except ImportError as exc:
        raise MTurkRouteError(
            'the MTurk route needs boto3: pip install -r requirements/human-eval.txt'
        ) from exc
    if target not in ENDPOINTS and not endpoint_url:
        raise MTurkRouteError(
            f'--target must be one of {sorted(ENDPOINTS)} (or give --endpoint-url)'
        )
    session = boto3.Session(profile_name=profile) if profile else boto3.Session()
    # MTurk exists only in us-east-1
    return session.client(
        'mturk', region_name='us-east-1', endpoint_url=endpoint_url or ENDPOINTS[target]
    )


def html_question(page_html: str, frame_height: int = 0) -> str:
    # "]]>" cannot appear inside CDATA: split it across two sections
    content = page_html.replace(']]>', ']]]]><![CDATA[>')
    question = (
        '<HTMLQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/'
        '2011-11-11/HTMLQuestion.xsd">'
        f'<HTMLContent><![CDATA[{content}]]></HTMLContent>'
        f'<FrameHeight>{int(frame_height)}</FrameHeight></HTMLQuestion>'
    )
    if len(question) > MAX_QUESTION_CHARS:
        raise MTurkRouteError(
            f'HIT page is {len(question)} characters, MTurk allows {MAX_QUESTION_CHARS}: '
            'lower --pairs-per-unit or build pairings with fewer --max-turns'
        )
    return question


def ensure_block_qualification(client, name: str) -> str:
    """The id of the soft-block qualification ``name``, created when missing."""
    found = client.list_qualification_types(
        Query=name, MustBeRequestable=False, MustBeOwnedByCaller=True, MaxResults=100
    )
    for q in found.get('QualificationTypes', []):
        if q['Name'] == name:
            return q['QualificationTypeId']
    created = client.create_qualification_type(
        Name=name,
        Description='Soft block: failed the onboarding check of a parlai-conkd study',
        QualificationTypeStatus='Active',
    )
    return created['QualificationType']['QualificationTypeId']


def qualification_requirements(
    block_qual_id: str,
    min_approval: Optional[int] = None,
    min_approved_hits: Optional[int] = None,
    locales: Sequence[str] = (),
) -> List[Dict]:
    reqs = [
        {
            'QualificationTypeId': block_qual_id,
            'Comparator': 'DoesNotExist',
            'ActionsGuarded': 'DiscoverPreviewAndAccept',
        }
    ]
    if min_approval is not None:
        reqs.append(
            {
                'QualificationTypeId': QUAL_PERCENT_APPROVED,
                'Comparator': 'GreaterThanOrEqualTo',
                'IntegerValues': [int(min_approval)],
                'ActionsGuarded': 'Accept',
            }
        )
    if min_approved_hits is not None:
        reqs.append(
            {
                'QualificationTypeId': QUAL_NUMBER_APPROVED,
                'Comparator': 'GreaterThanOrEqualTo',
                'IntegerValues': [int(min_approved_hits)],
                'ActionsGuarded': 'Accept',
            }
        )
    if locales:
        reqs.append(
            {
                'QualificationTypeId': QUAL_LOCALE,
                'Comparator': 'In',
                'LocaleValues': [{'Country': c} for c in locales],
                'ActionsGuarded': 'Accept',
            }
        )
    return reqs


def read_manifest(path: str) -> List[Dict]:
    return [
        entry
        for _, entry in iter_jsonl(
            path, MTurkRouteError, 'HIT manifest (made by `mturk create`)'
        )
    ]


def create_hits(
    client,
    study: Study,
    manifest_path: str,
    num_hits: int,
    reward: str,
    assignments_per_hit: int = 1,
    title: str = 'Compare two movie recommenders',
    description: str = 'Read two short conversations about movies and say which '
    'recommender was better, and why.',
    keywords: str = 'chatbot, conversation, movies, comparison',
    lifetime_s: int = 3 * 24 * 3600,
    duration_s: int = 30 * 60,
    auto_approve_s: int = 3 * 24 * 3600,
    block_qualification: str = 'conkd_acute_blocked',
    min_approval: Optional[int] = None,
    min_approved_hits: Optional[int] = None,
    locales: Sequence[str] = (),
) -> List[Dict]:
    """Create ``num_hits`` HITs; each manifest line is written as soon as its HIT exists."""
    block_id = ensure_block_qualification(client, block_qualification)
    requirements = qualification_requirements(
        block_id, min_approval, min_approved_hits, locales
    )
    created = []
    try:
        for _ in range(num_hits):
            unit = study.new_unit(None, with_onboarding=True)
            question = html_question(render_page('mturk', view=study.view(unit)))
            hit = client.create_hit(
                MaxAssignments=assignments_per_hit,
                LifetimeInSeconds=lifetime_s,
                AssignmentDurationInSeconds=duration_s,
                AutoApprovalDelayInSeconds=auto_approve_s,
                Reward=reward,
                Title=title,
                Keywords=keywords,
                Description=description,
                Question=question,
                QualificationRequirements=requirements,
                RequesterAnnotation=unit.unit_id,
            )['HIT']
            entry = {
                'hit_id': hit['HITId'],
                'hit_type_id': hit['HITTypeId'],
                'block_qualification_id': block_id,
                'unit': unit.to_dict(),
            }
            append_jsonl(manifest_path, entry)
            created.append(entry)
    finally:
        study.pending.clear()  # planned units live in the manifest, not in the study
    return created


def parse_answer(answer_xml: str) -> Dict[str, str]:
    """MTurk's QuestionFormAnswers XML -> {QuestionIdentifier: FreeText}."""
    root = ET.fromstring(answer_xml)
    fields = {}
    for answer in root:
        ident = answer.find('{*}QuestionIdentifier')
        text = answer.find('{*}FreeText')
        if ident is not None:
            fields[ident.text] = text.text if text is not None else ''
    return fields


def _list_assignments(client, hit_id: str) -> Iterable[Dict]:
    kwargs = {
        'HITId': hit_id,
        'AssignmentStatuses': ['Submitted', 'Approved'],
        'MaxResults': 100,
    }
    while True:
        page = client.list_assignments_for_hit(**kwargs)
        yield from page.get('Assignments', [])
        if not page.get('NextToken'):
            return
        kwargs['NextToken'] = page['NextToken']


def collect(
    client, study: Study, manifest_path: str, approve: bool = True, block: bool = True
) -> Dict[str, int]:
    """Store every new submitted assignment; returns counts of what happened."""
    stored = {r.get('assignment_id') for r in study.store.records()}
    counts = {
        'stored': 0,
        'screened_out': 0,
        'approved': 0,
        'invalid': 0,
        'already_stored': 0,
        'repeated': 0,
    }
    for entry in read_manifest(manifest_path):
        unit = UnitSpec.from_dict(entry['unit'])
        for assignment in _list_assignments(client, entry['hit_id']):
            assignment_id, worker_id = (
                assignment['AssignmentId'],
                assignment['WorkerId'],
            )
            if assignment_id in stored:
                counts['already_stored'] += 1
                continue
            try:
                payload = json.loads(
                    parse_answer(assignment['Answer']).get(ANSWER_FIELD) or 'null'
                )
                if not isinstance(payload, dict):
                    raise AnswerError('no answer field')
                answers = payload.get('answers') or []
                check_answers(unit, answers)
            except (AnswerError, ValueError, ET.ParseError) as exc:
                print(
                    f'[human_eval] assignment {assignment_id} (worker {worker_id}) left for '
                    f'manual review: {exc}',
                    file=sys.stderr,
                )
                counts['invalid'] += 1
                continue
            status = COMPLETED if study.passes(unit, answers) else SCREENED_OUT
            repeated = {
                i.pair_id for i in unit.items if not i.is_onboarding
            } & study.rated(worker_id, unit.question['question'])
            # two HITs sharing comparisons: stored, but only the first rating counts
            if repeated:
                print(
                    f'[human_eval] assignment {assignment_id}: worker {worker_id} already rated '
                    f'comparison(s) {sorted(repeated)}; the analysis counts their first rating only',
                    file=sys.stderr,
                )
                counts['repeated'] += 1
            worker_unit = UnitSpec(
                f'{unit.unit_id}-{assignment_id}',
                unit.question,
                unit.items,
                worker_id,
                payload.get('task_start'),
            )
            study.store.append(
                result_record(
                    worker_unit,
                    study.pairs,
                    answers,
                    worker_id,
                    status,
                    task_end=payload.get('task_end'),
                    assignment_id=assignment_id,
                    hit_id=entry['hit_id'],
                )
            )
            counts['stored'] += 1
            if status == SCREENED_OUT:
                counts['screened_out'] += 1
                if block:
                    client.associate_qualification_with_worker(
                        QualificationTypeId=entry['block_qualification_id'],
                        WorkerId=worker_id,
                        IntegerValue=1,
                        SendNotification=False,
                    )
            if approve and assignment['AssignmentStatus'] == 'Submitted':
                # ACUTE pays screened-out workers for the work done and only blocks them
                client.approve_assignment(AssignmentId=assignment_id)
                counts['approved'] += 1
    return counts
