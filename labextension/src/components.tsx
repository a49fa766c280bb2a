/**
 * React pieces shared by the jobs panel and the notebook job view: untrusted
 * Markdown, the approval card (one design everywhere), the state badge, the
 * job's age and the small buttons. Every untrusted value is React text or
 * goes through the strict sanitizer of untrusted.ts.
 */
import { Sanitizer } from '@jupyterlab/apputils';
import { IRenderMimeRegistry, MimeModel } from '@jupyterlab/rendermime';
import { Button } from '@jupyterlab/ui-components';
import React, { useEffect, useMemo, useRef, useState } from 'react';

import { IApproval, IJobView } from './api';
import {
  ageTitle,
  callerLabel,
  formatAge,
  formatExpiry,
  formatLocal,
  jobState
} from './format';
import { GatewayModel } from './model';
import { NO_TYPESETTING, UntrustedSanitizer } from './untrusted';

/**
 * Untrusted Markdown (an agent's answer) rendered with a clone of the
 * application's rendermime registry that has a strict sanitizer of its own
 * and no TeX typesetting: see untrusted.ts.
 */
export function Markdown(props: {
  source: string;
  rendermime: IRenderMimeRegistry | null;
  className?: string;
}): JSX.Element {
  const { source } = props;
  const rendermime = useMemo(
    () =>
      props.rendermime?.clone({
        sanitizer: new UntrustedSanitizer(new Sanitizer()),
        latexTypesetter: NO_TYPESETTING
      }) ?? null,
    [props.rendermime]
  );
  const host = useRef<HTMLDivElement>(null);
  const [failed, setFailed] = useState(false);
  useEffect(() => {
    const node = host.current;
    if (!node || !rendermime) {
      return;
    }
    let disposed = false;
    const renderer = rendermime.createRenderer('text/markdown');
    const model = new MimeModel({
      data: { 'text/markdown': source },
      trusted: false
    });
    renderer
      .renderModel(model)
      .then(() => {
        if (!disposed) {
          node.replaceChildren(renderer.node);
        }
      })
      .catch(() => {
        if (!disposed) {
          setFailed(true);
        }
      });
    return () => {
      disposed = true;
      renderer.dispose();
    };
  }, [source, rendermime]);
  const className = `llmgw-markdown ${props.className ?? ''}`.trim();
  if (!rendermime || failed) {
    return (
      <pre className={`llmgw-markdown-fallback ${props.className ?? ''}`}>
        {source}
      </pre>
    );
  }
  return <div className={className} ref={host} />;
}

/** A small JupyterLab button (`jp-Button jp-mod-small`, styled). */
export function SmallButton(
  props: React.ButtonHTMLAttributes<HTMLButtonElement> & {
    kind?: 'accept' | 'success' | 'warn';
    testid?: string;
  }
): JSX.Element {
  const { kind, testid, className, ...rest } = props;
  const mod =
    kind === 'accept'
      ? ' jp-mod-accept'
      : kind === 'warn'
        ? ' jp-mod-warn'
        : kind === 'success'
          ? ' llmgw-mod-success'
          : '';
  return (
    <Button
      small
      type="button"
      className={`jp-mod-styled llmgw-button${mod} ${className ?? ''}`.trim()}
      data-testid={testid}
      {...rest}
    />
  );
}

/** The state of a job as a badge: what happened ("denied"), not only the status. */
export function StateBadge(props: {
  job: Pick<IJobView, 'status' | 'cancel_reason'>;
  className?: string;
  testid?: string;
}): JSX.Element {
  const { state, label } = jobState(props.job);
  return (
    <span
      className={`llmgw-state-badge ${props.className ?? ''}`.trim()}
      data-testid={props.testid}
      data-status={props.job.status}
      data-state={state}
    >
      {label}
    </span>
  );
}

/** The job's age ("3 min ago"); the tooltip has the time and the duration. */
export function JobAge(props: {
  job: IJobView;
  now: number;
  className?: string;
}): JSX.Element {
  const { job, now } = props;
  const age = formatAge(job.created_at, now);
  return (
    <span
      className={`llmgw-age ${props.className ?? ''}`.trim()}
      title={ageTitle(job, now)}
    >
      <span className="llmgw-visually-hidden">created </span>
      {age}
    </span>
  );
}

/** "in 9 min" until an approval expires, with the exact local time as tooltip. */
export function Expiry(props: {
  expiresAt: string | null | undefined;
  now: number;
}): JSX.Element | null {
  const text = formatExpiry(props.expiresAt, props.now);
  if (!text) {
    return null;
  }
  return (
    <span
      className="llmgw-approval-expires"
      title={`expires ${formatLocal(props.expiresAt)}`}
    >
      {text === 'expired' ? 'expired' : `expires ${text}`}
    </span>
  );
}

/**
 * One pending approval: who asks for which tool, why, until when, with the
 * exact arguments, and Approve (success) / Deny (danger).
 */
export function ApprovalCard(props: {
  approval: IApproval;
  now: number;
  onDecide: (approve: boolean) => Promise<void>;
  showArguments?: boolean;
  as?: 'li' | 'div';
}): JSX.Element {
  const { approval, now, onDecide } = props;
  const [busy, setBusy] = useState(false);
  const decide = (approve: boolean) => {
    setBusy(true);
    void onDecide(approve).finally(() => setBusy(false));
  };
  let args: string;
  try {
    args = JSON.stringify(approval.arguments, null, 2);
  } catch {
    args = String(approval.arguments);
  }
  const Tag = props.as ?? 'li';
  return (
    <Tag
      className="llmgw-approval"
      data-testid="llmgw-approval"
      data-approval-id={approval.id}
    >
      <div className="llmgw-approval-head">
        <span className="llmgw-approval-title">Approval needed:</span>
        <span className="llmgw-approval-caller" title={approval.caller}>
          {callerLabel(approval.caller)}
        </span>
        <span className="llmgw-approval-asks">asks to run</span>
        <span className="llmgw-approval-tool">{approval.tool}</span>
        <Expiry expiresAt={approval.expires_at} now={now} />
      </div>
      {approval.reason ? (
        <div className="llmgw-approval-reason">{approval.reason}</div>
      ) : null}
      {props.showArguments === false ? null : (
        <pre className="llmgw-approval-args" data-testid="llmgw-approval-args">
          {args}
        </pre>
      )}
      <div className="llmgw-actions">
        <SmallButton
          kind="success"
          className="llmgw-approve"
          testid="llmgw-approve"
          disabled={busy}
          onClick={() => decide(true)}
        >
          Approve
        </SmallButton>
        <SmallButton
          kind="warn"
          className="llmgw-deny"
          testid="llmgw-deny"
          disabled={busy}
          onClick={() => decide(false)}
        >
          Deny
        </SmallButton>
      </div>
    </Tag>
  );
}

/** The approval record of a denied job (who and why), loaded once. */
export function useDecision(
  model: GatewayModel,
  job: Pick<IJobView, 'id' | 'status' | 'cancel_reason'>
): IApproval | null {
  const [decision, setDecision] = useState<IApproval | null>(null);
  const wanted =
    job.status === 'cancelled' && job.cancel_reason === 'approval_denied';
  useEffect(() => {
    if (!wanted) {
      return;
    }
    let live = true;
    model.decisionFor(job.id).then(
      found => {
        if (live) {
          setDecision(found);
        }
      },
      () => undefined
    );
    return () => {
      live = false;
    };
  }, [model, job.id, wanted]);
  return wanted ? decision : null;
}
